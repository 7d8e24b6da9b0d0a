"""My page: a read model per order, written only by its projection, read with plain queries."""
