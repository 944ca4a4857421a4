"""validate(): the form's rules on their own, each case the example submission with one change."""

import pytest
from helpers import submitted

import app
from app import validate


def test_the_example_submission_is_valid():
    values, errors = validate(submitted())
    assert errors == {}
    # Each field's first value, and the hobbies as a list: a new field needs no change here.
    assert values == {
        **{name: sent[0] for name, sent in app.EXAMPLE.items()},
        "hobbies": app.EXAMPLE["hobbies"],
    }


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
    values, errors = validate(submitted(age=[age]))
    assert (values["age"], errors) == (cleaned, {})


def test_a_missing_age_is_an_empty_one():
    form = submitted()
    del form["age"]
    assert validate(form)[0]["age"] == ""


def test_a_repeated_age_counts_the_first():
    assert validate(submitted(age=["34", "x"])) == validate(submitted(age=["34"]))


@pytest.mark.parametrize("age", ["151", "-0", "+3", "3 4", "½", "²", "１２", "1_0", "9" * 10_000])
def test_invalid_ages_get_a_message(age):
    values, errors = validate(submitted(age=[age]))
    assert set(errors) == {"age"}
    assert values["age"] == age.strip()


def test_hobbies_are_deduplicated_in_form_order():
    chosen = list(reversed(app.HOBBIES)) * 2
    assert validate(submitted(hobbies=chosen))[0]["hobbies"] == list(app.HOBBIES)


@pytest.mark.parametrize("hobbies", [["golf"], [next(iter(app.HOBBIES)).title()], [""]])
def test_hobbies_not_offered_are_errors(hobbies):
    assert set(validate(submitted(hobbies=hobbies))[1]) == {"hobbies"}
