"""Orders context: the course catalog and the orders placed on it."""
