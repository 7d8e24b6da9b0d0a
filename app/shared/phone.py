"""Korean mobile numbers, normalized to 010-1234-5678 with the phonenumbers library."""

from functools import lru_cache

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType


# Parsing and validating a number is slow next to a dictionary lookup, and a student sends the
# same phone again and again (My page, their orders and SMS). A refused number raises, and is
# not kept.
@lru_cache(maxsize=8192)
def normalize_mobile(raw: str) -> str:
    """Return the number as 010-XXXX-XXXX; ValueError if it is not a Korean mobile number."""
    try:
        number = phonenumbers.parse(raw, "KR")
    except NumberParseException:
        raise ValueError("not a phone number") from None
    if (
        number.country_code != 82
        or not phonenumbers.is_valid_number(number)
        or phonenumbers.number_type(number) != PhoneNumberType.MOBILE
    ):
        raise ValueError("not a Korean mobile number (e.g. 010-1234-5678)")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)


def masked_mobile(phone: str) -> str:
    """010-1234-5678 -> 010-****-5678: enough to tell numbers apart, not to call one."""
    return f"{phone[:4]}****{phone[-5:]}"
