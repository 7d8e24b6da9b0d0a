"""flask-smorest's pagination parameters, typed (see __init__.pyi)."""

class PaginationParameters:
    """What a paginated view receives: the page asked for; the view sets `item_count`."""

    page: int
    page_size: int
    item_count: int | None
    @property
    def first_item(self) -> int: ...
    @property
    def last_item(self) -> int: ...
