"""The form as a person uses it: fill it in, submit it, read what was saved, fix mistakes.

Each test starts from the app's example submission (app.EXAMPLE) and changes only what it is about,
so a change to the form changes app.py, not these tests.
"""

import bottle
import pytest
from helpers import (
    PAGES,
    cleaned,
    example,
    fill,
    hobbies_shown,
    result_line,
    saved_page,
    visit,
)

import app
import guards
from deploy.audit import result_text

SEED_HOBBIES = {"software": "Software", "tunning": "Auto Tuning"}  # pinned on purpose: the seed's


def test_the_seed_hobbies_are_offered_with_their_labels(testapp):
    # The seed's values and labels, written out: old clients post them, so a typo must fail here.
    res = testapp.get("/")
    boxes = {box["value"]: box.parent.get_text(strip=True) for box in checkboxes(res)}
    assert SEED_HOBBIES.items() <= boxes.items()
    assert res.html.find(id="result") is None  # nothing sent, so nothing saved to show


def checkboxes(res) -> list:
    """Return the page's hobby checkboxes, in page order."""
    return res.html.find_all("input", attrs={"type": "checkbox", "name": "hobbies"})


def test_empty_form_offers_every_hobby_in_order(testapp):
    res = testapp.get("/")
    assert res.content_type == "text/html"
    assert res.form.method.lower() == "post"
    assert res.form["age"].value == ""
    assert res.html.find("label", attrs={"for": "age"}).get_text() == "Age"
    assert [box["value"] for box in checkboxes(res)] == list(app.HOBBIES)
    labels = [label.get_text(strip=True) for label in res.html.fieldset.find_all("label")]
    assert labels == list(app.HOBBIES.values())


def test_the_form_has_fewer_fields_than_the_app_accepts(testapp):
    fields = testapp.get("/").form.fields
    assert sum(len(controls) for controls in fields.values()) < guards.MAX_FIELDS


@pytest.mark.parametrize("enctype", ["application/x-www-form-urlencoded", "multipart/form-data"])
def test_submitted_values_are_saved_and_shown(testapp, enctype):
    form = fill(testapp.get("/").form)
    form.enctype = enctype
    res = saved_page(form.submit())
    assert res.status_int == 200
    assert result_line(res) == result_text(cleaned())


def test_an_empty_age_and_no_hobbies_show_the_empty_result(testapp):
    res = saved_page(fill(testapp.get("/").form, age=[""], hobbies=[]).submit())
    assert result_line(res) == result_text(cleaned(age=[""], hobbies=[]))


@pytest.mark.parametrize("hobby", list(app.HOBBIES))
def test_one_hobby_is_saved_and_the_others_are_not(testapp, hobby):
    res = saved_page(fill(testapp.get("/").form, hobbies=[hobby]).submit())
    assert result_line(res) == result_text(cleaned(hobbies=[hobby]))


def test_hobbies_come_in_form_order_and_once_each(testapp):
    chosen = list(reversed(app.HOBBIES)) + [next(iter(app.HOBBIES))]
    res = saved_page(testapp.post("/", example(hobbies=chosen)))
    assert result_line(res).endswith(hobbies_shown(list(app.HOBBIES)))


def test_a_repeated_age_counts_once_the_first_as_in_the_seed(testapp):
    res = saved_page(testapp.post("/", example(age=["34", "77"])))
    assert result_line(res) == result_text(cleaned(age=["34"]))


def test_age_is_trimmed_and_normalised(testapp):
    res = saved_page(fill(testapp.get("/").form, age=["  007 "]).submit())
    assert result_line(res) == result_text(cleaned(age=["7"]))


@pytest.mark.parametrize("enctype", ["application/x-www-form-urlencoded", "multipart/form-data"])
def test_non_ascii_input_comes_back_intact(testapp, enctype):
    form = fill(testapp.get("/").form, age=["trente-quatre ans, ३४ 🎂"])
    form.enctype = enctype
    res = form.submit(status=422)
    assert res.form["age"].value == "trente-quatre ans, ३४ 🎂"


@pytest.mark.parametrize("age", ["-1", "151", "3.5", "34 years", "٣٤", "1e2", "0x10", "9" * 5000])
def test_invalid_age_is_rejected_next_to_the_field_and_kept(testapp, age):
    rows = app.DATABASE.count()
    res = fill(testapp.get("/").form, age=[age]).submit(status=422)
    field = res.html.find(id="age")
    message = res.html.find(id=field["aria-describedby"])
    assert field["aria-invalid"] == "true"
    assert f"whole number from 0 to {app.MAX_AGE}" in message.get_text()
    assert res.form["age"].value == age
    assert [box.checked for box in res.form.fields["hobbies"]] == [
        value in app.EXAMPLE["hobbies"] for value in app.HOBBIES
    ]
    assert app.DATABASE.count() == rows  # nothing stored


def test_unknown_hobby_is_rejected_and_known_ones_stay_ticked(testapp):
    known = next(iter(app.HOBBIES))
    res = testapp.post("/", example(hobbies=[known, "golf"]), status=422)
    fieldset = res.html.fieldset
    message = res.html.find(id=fieldset["aria-describedby"])
    assert message.get_text() == "Choose only from the hobbies listed."  # word for word, on purpose
    assert [box.checked for box in res.form.fields["hobbies"]] == [
        value == known for value in app.HOBBIES
    ]
    assert res.form["age"].value == app.EXAMPLE["age"][0]
    assert res.html.find(id="age").get("aria-invalid") is None


def test_the_title_says_whether_the_form_has_errors(testapp):
    # The title is read out first when a page loads: it says that the form needs fixing.
    assert testapp.get("/").html.title.get_text() == app.TITLE
    assert saved_page(testapp.post("/", example())).html.title.get_text() == f"Saved: {app.TITLE}"
    res = testapp.post("/", example(age=["x"]), status=422)
    assert res.html.title.get_text() == f"Error: {app.TITLE}"
    assert res.html.h1.get_text() == app.TITLE


@pytest.mark.parametrize("state", PAGES)
def test_every_page_has_a_language_a_title_one_h1_and_a_main_landmark(testapp, state):
    res = visit(testapp, state)
    assert res.html.html["lang"] == "en"
    assert res.html.title.get_text().strip()
    assert [len(res.html.find_all(tag)) for tag in ("h1", "main")] == [1, 1]


def test_pages_render_whatever_the_working_directory(testapp, monkeypatch, tmp_path):
    # Bottle looks for templates in the working directory unless the app says where they are.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(bottle, "TEMPLATES", {})  # none compiled yet: looked up from here
    testapp.get("/").mustcontain(app.TITLE)
    testapp.get("/nowhere", status=404).mustcontain(app.ERROR_MESSAGES[404])


def test_fixing_the_error_saves_it_under_the_forms_token(testapp):
    form = testapp.get("/").form
    res = fill(form, age=["abc"]).submit(status=422)
    assert res.form["token"].value == form["token"].value  # kept through the error
    res.form["age"] = str(app.MAX_AGE)
    res = res.form.submit()
    assert res.headers["Location"] == f"/saved/{form['token'].value}"
    assert result_line(saved_page(res)) == result_text(cleaned(age=[str(app.MAX_AGE)]))


def test_a_post_without_a_token_is_saved_under_one_the_server_makes(testapp):
    # As the README's curl example sends it, and the seed's clients: each is a submission of its
    # own, since nothing says it was sent before.
    first, second = (testapp.post("/", example()) for _ in range(2))
    assert first.headers["Location"] != second.headers["Location"]
    for res in (first, second):
        assert result_line(saved_page(res)) == result_text(cleaned())


def test_each_template_is_compiled_once(testapp):
    testapp.get("/")  # compiles what the pages need
    testapp.get("/nowhere", status=404)
    compiled = dict(bottle.TEMPLATES)
    for _ in range(3):
        testapp.get("/")
        testapp.get("/nowhere", status=404)
    assert bottle.TEMPLATES == compiled  # the same templates, none added
