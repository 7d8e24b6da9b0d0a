"""The database layer every context builds on, one module per job:

- `base`: the declarative bases (one per database) and the UTC datetime column type;
- `engine`: engines with their connection hooks, and `Database`, a process's session factories;
- `bulk`: statements that read, insert or update a batch of rows in one round trip;
- `paging`: optional filters and one page of a list query with its total.
"""
