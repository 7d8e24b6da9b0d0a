"""Learning context: learning managers and the learnings they run."""
