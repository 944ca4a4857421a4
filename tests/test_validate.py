"""validate(): the form's rules on their own."""

import pytest

from app import validate


@pytest.mark.parametrize(
    ("age", "cleaned"),
    [
        ("", ""),
        ("  ", ""),
        ("0", "0"),
        ("34", "34"),
        (" 34\t", "34"),
        ("0150", "150"),
        ("150", "150"),
    ],
)
def test_valid_ages_are_cleaned(age, cleaned):
    assert validate(age, []) == ({"age": cleaned, "hobbies": []}, {})


@pytest.mark.parametrize("age", ["151", "-0", "+3", "3 4", "½", "²", "１２", "1_0", "9" * 10_000])
def test_invalid_ages_get_a_message(age):
    values, errors = validate(age, [])
    assert set(errors) == {"age"}
    assert values["age"] == age.strip()


def test_hobbies_are_deduplicated_in_form_order():
    assert validate("", ["tunning", "software", "software"])[0]["hobbies"] == [
        "software",
        "tunning",
    ]


@pytest.mark.parametrize("hobbies", [["golf"], ["software", "Software"], [""]])
def test_hobbies_not_offered_are_errors(hobbies):
    assert set(validate("", hobbies)[1]) == {"hobbies"}
