"""The form as a person uses it: fill it in, submit it, read the result, fix mistakes."""

import pytest
from helpers import result_line


def test_empty_form_shows_fields_and_the_seed_result_line(testapp):
    res = testapp.get("/")
    assert res.content_type == "text/html"
    form = res.form
    assert form.method.lower() == "post"
    assert form["age"].value == ""
    boxes = res.html.find_all("input", attrs={"type": "checkbox", "name": "hobbies"})
    assert [box["value"] for box in boxes] == ["software", "tunning"]
    assert res.html.find("label", attrs={"for": "age"}).get_text() == "Age"
    assert [label.get_text(strip=True) for label in res.html.fieldset.find_all("label")] == [
        "Software",
        "Auto Tuning",
    ]
    assert result_line(res) == "Age: Empty Hobbies: No Hobbies?"


@pytest.mark.parametrize("enctype", ["application/x-www-form-urlencoded", "multipart/form-data"])
def test_submitted_values_are_shown_and_kept(testapp, enctype):
    form = testapp.get("/").form
    form.enctype = enctype
    form["age"] = "34"
    form.get("hobbies", index=0).checked = True
    form.get("hobbies", index=1).checked = True
    res = form.submit()
    assert res.status_int == 200
    assert result_line(res) == "Age: 34 Hobbies: Software, Auto Tuning"
    assert res.form["age"].value == "34"
    assert [box.checked for box in res.form.fields["hobbies"]] == [True, True]


def test_nothing_submitted_shows_the_empty_result(testapp):
    res = testapp.get("/").form.submit()
    assert result_line(res) == "Age: Empty Hobbies: No Hobbies?"


def test_one_hobby_is_kept_and_the_other_stays_unticked(testapp):
    form = testapp.get("/").form
    form.get("hobbies", index=1).checked = True
    res = form.submit()
    assert result_line(res) == "Age: Empty Hobbies: Auto Tuning"
    assert [box.checked for box in res.form.fields["hobbies"]] == [False, True]


def test_hobbies_come_in_form_order_and_once_each(testapp):
    body = {"age": "", "hobbies": ["tunning", "software", "tunning"]}
    res = testapp.post("/", body)
    assert result_line(res) == "Age: Empty Hobbies: Software, Auto Tuning"


def test_age_is_trimmed_and_normalised(testapp):
    form = testapp.get("/").form
    form["age"] = "  007 "
    res = form.submit()
    assert result_line(res) == "Age: 7 Hobbies: No Hobbies?"
    assert res.form["age"].value == "7"


@pytest.mark.parametrize("enctype", ["application/x-www-form-urlencoded", "multipart/form-data"])
def test_non_ascii_input_comes_back_intact(testapp, enctype):
    form = testapp.get("/").form
    form.enctype = enctype
    form["age"] = "trente-quatre ans, ३४ 🎂"
    res = form.submit(status=422)
    assert res.form["age"].value == "trente-quatre ans, ३४ 🎂"


@pytest.mark.parametrize("age", ["-1", "151", "3.5", "34 years", "٣٤", "1e2", "0x10", "9" * 5000])
def test_invalid_age_is_rejected_next_to_the_field_and_kept(testapp, age):
    form = testapp.get("/").form
    form["age"] = age
    form.get("hobbies", index=0).checked = True
    res = form.submit(status=422)
    field = res.html.find(id="age")
    message = res.html.find(id=field["aria-describedby"])
    assert field["aria-invalid"] == "true"
    assert "whole number from 0 to 150" in message.get_text()
    assert res.form["age"].value == age
    assert [box.checked for box in res.form.fields["hobbies"]] == [True, False]
    res.mustcontain(no=["Age: "])


def test_unknown_hobby_is_rejected_and_known_ones_stay_ticked(testapp):
    res = testapp.post("/", {"age": "34", "hobbies": ["software", "golf"]}, status=422)
    fieldset = res.html.fieldset
    message = res.html.find(id=fieldset["aria-describedby"])
    assert "Choose only from the hobbies listed" in message.get_text()
    assert [box.checked for box in res.form.fields["hobbies"]] == [True, False]
    assert res.form["age"].value == "34"
    assert res.html.find(id="age").get("aria-invalid") is None


def test_fixing_the_error_gives_the_result(testapp):
    form = testapp.get("/").form
    form["age"] = "abc"
    res = form.submit(status=422)
    res.form["age"] = "150"
    res = res.form.submit()
    assert result_line(res) == "Age: 150 Hobbies: No Hobbies?"
    assert res.html.find(attrs={"aria-invalid": True}) is None
