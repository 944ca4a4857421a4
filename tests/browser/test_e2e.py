"""The form in a real browser, used as a person would: with the mouse, or the keyboard alone."""

from helpers import hobbies_shown, submitted
from pages import INVALID, PHONE, STATES, ConsoleWatch, empty_form, example, fill, submit
from playwright.sync_api import expect

import app
from guards import SECURITY_HEADERS


def result_text(page) -> str:
    """Return the result line as the browser shows it, whitespace folded."""
    return " ".join(page.locator("#result").inner_text().split())


def expect_ticked(page, hobbies: list[str]) -> None:
    """Check that exactly these hobbies' boxes are ticked."""
    for value, label in app.HOBBIES.items():
        box = expect(page.get_by_label(label, exact=True))
        box.to_be_checked() if value in hobbies else box.not_to_be_checked()


def test_clicking_submit_shows_the_result_and_keeps_the_boxes_ticked(page, base_url):
    STATES["result"](page, base_url)
    age, hobbies = app.EXAMPLE["age"][0], app.EXAMPLE["hobbies"]
    assert f"Age: {age} {hobbies_shown(hobbies)}" in result_text(page)
    expect(page.get_by_label("Age")).to_have_value(age)
    expect_ticked(page, hobbies)


def test_the_form_works_with_the_keyboard_alone(page, base_url):
    empty_form(page, base_url)
    controls = page.locator("form input, form button")  # the tab order is the page's order
    values = example(age=["7"])
    for index in range(controls.count() - 1):
        control = controls.nth(index)
        page.keyboard.press("Tab")
        expect(control).to_be_focused()
        name = control.get_attribute("name")
        if control.get_attribute("type") != "checkbox":
            page.keyboard.type(values[name][0])
        elif control.get_attribute("value") in values[name]:
            page.keyboard.press("Space")
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Submit")).to_be_focused()
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert f"Age: 7 {hobbies_shown(values['hobbies'])}" in result_text(page)
    expect_ticked(page, values["hobbies"])


def test_enter_in_the_age_field_submits(page, base_url):
    empty_form(page, base_url)
    fill(page, age=[str(app.MAX_AGE)], hobbies=[])
    with page.expect_navigation():
        page.get_by_label("Age").press("Enter")
    assert f"Age: {app.MAX_AGE} Hobbies: No Hobbies?" in result_text(page)


def test_invalid_age_shows_its_message_next_to_the_field_and_keeps_the_text(page, base_url):
    STATES["validation-error"](page, base_url)
    age = page.get_by_label("Age")
    expect(age).to_have_value(INVALID["age"][0])
    expect(age).to_have_attribute("aria-invalid", "true")
    expected = app.validate(submitted(**INVALID))[1]["age"]
    expect(age).to_have_accessible_description(expected)
    message = page.locator("#age-error")
    expect(message).to_be_visible()
    # Next to the field: right below it, before anything else on the page.
    field_box, message_box = age.bounding_box(), message.bounding_box()
    assert 0 <= message_box["y"] - (field_box["y"] + field_box["height"]) < 24
    expect_ticked(page, INVALID["hobbies"])
    expect(page.locator("#result")).to_have_count(0)


def test_fixing_the_age_gives_the_result(page, base_url):
    STATES["validation-error"](page, base_url)
    page.get_by_label("Age").fill("34")
    submit(page)
    assert f"Age: 34 {hobbies_shown(INVALID['hobbies'])}" in result_text(page)
    expect(page.get_by_label("Age")).not_to_have_attribute("aria-invalid", "true")


def test_a_csp_violation_would_be_caught(window, base_url):
    # The app's own headers over a page with inline style and script: the watch must report both.
    # (With the app's icon: a page without one makes Chromium ask for /favicon.ico, a 404.)
    body = (
        '<!DOCTYPE html><title>t</title><link rel="icon" href="/static/favicon.svg">'
        "<style>p{color:red}</style><script>1</script><p>x"
    )
    url = base_url + "/inline"
    window.route(
        url,
        lambda route: route.fulfill(
            body=body, content_type="text/html", headers=dict(SECURITY_HEADERS)
        ),
    )
    watch = ConsoleWatch(window)
    try:
        window.goto(url)
        problems = watch.problems()
    finally:
        watch.stop()
        window.unroute(url)
        window.goto("about:blank")  # as the page fixture leaves it
    assert len(problems) == 2
    assert all("Content Security Policy" in problem for problem in problems)


def test_keyboard_focus_is_clearly_visible_on_every_control(page, base_url):
    empty_form(page, base_url)
    controls = page.locator("form input, form button")
    assert controls.count() > len(app.HOBBIES)  # the boxes, and more
    for index in range(controls.count()):
        page.keyboard.press("Tab")
        expect(controls.nth(index)).to_be_focused()
        focused = page.locator(":focus")
        expect(focused).to_have_css("outline-style", "solid")
        expect(focused).to_have_css("outline-width", "3px")


def test_pages_fit_a_phone_screen_without_sideways_scrolling(browser, base_url):
    context = browser.new_context(viewport=PHONE, is_mobile=True)
    overflow = {}  # pixels wider than the screen, by state
    try:
        page = context.new_page()
        for state, reach in STATES.items():
            reach(page, base_url)
            overflow[state] = page.evaluate(
                "document.documentElement.scrollWidth - visualViewport.width"
            )
    finally:
        context.close()
    assert {state: pixels for state, pixels in overflow.items() if pixels > 0} == {}
