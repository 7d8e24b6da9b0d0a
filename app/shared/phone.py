"""Korean mobile numbers, normalized to 010-1234-5678 with the phonenumbers library."""

import re
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
    # Korea is one region: there a number of a known type is a valid number, and
    # is_valid_number() would only match the same patterns again.
    if number.country_code != 82 or phonenumbers.number_type(number) != PhoneNumberType.MOBILE:
        raise ValueError("not a Korean mobile number (e.g. 010-1234-5678)")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)


def masked_mobile(phone: str) -> str:
    """010-1234-5678 -> 010-****-5678: enough to tell numbers apart, not to call one."""
    return mask_phones(phone)


# A Korean mobile number anywhere in a text: 010-1234-5678, 01012345678, 010.1234.5678,
# +82 10 1234 5678, and the same URL-encoded (010%2D1234%2D5678, %2B82...) or with `+` for a
# space, as a request line carries them.
_SEPARATOR = r"(?:[-. +]|%2[Dd]|%20)?"
_MOBILE_IN_TEXT = re.compile(
    r"(?<![0-9A-Za-z])"
    rf"((?:(?:\+|%2[Bb])?82{_SEPARATOR}1|01)[016789]{_SEPARATOR})"
    rf"[0-9]{{3,4}}({_SEPARATOR}[0-9]{{4}})"
    r"(?![0-9A-Za-z])"
)


def mask_phones(text: str) -> str:
    """The text with the middle digits of every mobile number starred (010-****-5678): logs are
    read by more people than the database."""
    return _MOBILE_IN_TEXT.sub(r"\1****\2", text)
