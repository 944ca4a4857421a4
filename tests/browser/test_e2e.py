"""The form in a real browser, used as a person would: with the mouse, or the keyboard alone."""

import pytest
from pages import PHONE, STATES, ConsoleWatch, empty_form, submit
from playwright.sync_api import expect

from app import SECURITY_HEADERS


def result_text(page) -> str:
    """Return the result line as the browser shows it, whitespace folded."""
    return " ".join(page.locator("#result").inner_text().split())


def test_clicking_submit_shows_the_result_and_keeps_the_boxes_ticked(page, base_url):
    empty_form(page, base_url)
    page.get_by_label("Age").fill("34")
    page.get_by_label("Software").check()
    page.get_by_label("Auto Tuning").check()
    submit(page)
    assert result_text(page) == "Age: 34 Hobbies: Software, Auto Tuning"
    expect(page.get_by_label("Age")).to_have_value("34")
    expect(page.get_by_label("Software")).to_be_checked()
    expect(page.get_by_label("Auto Tuning")).to_be_checked()


def test_the_form_works_with_the_keyboard_alone(page, base_url):
    empty_form(page, base_url)
    page.keyboard.press("Tab")
    expect(page.get_by_label("Age")).to_be_focused()
    page.keyboard.type("7")
    for hobby in ["Software", "Auto Tuning"]:
        page.keyboard.press("Tab")
        expect(page.get_by_label(hobby)).to_be_focused()
        page.keyboard.press("Space")
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Submit")).to_be_focused()
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert result_text(page) == "Age: 7 Hobbies: Software, Auto Tuning"
    expect(page.get_by_label("Software")).to_be_checked()
    expect(page.get_by_label("Auto Tuning")).to_be_checked()


def test_enter_in_the_age_field_submits(page, base_url):
    empty_form(page, base_url)
    page.get_by_label("Age").fill("150")
    with page.expect_navigation():
        page.get_by_label("Age").press("Enter")
    assert result_text(page) == "Age: 150 Hobbies: No Hobbies?"


def test_invalid_age_shows_its_message_next_to_the_field_and_keeps_the_text(page, base_url):
    STATES["validation-error"](page, base_url)
    age = page.get_by_label("Age")
    expect(age).to_have_value("thirty")
    expect(age).to_have_attribute("aria-invalid", "true")
    expect(age).to_have_accessible_description(
        "Enter your age as a whole number from 0 to 150, like 34."
    )
    message = page.locator("#age-error")
    expect(message).to_be_visible()
    # Next to the field: right below it, before anything else on the page.
    field_box, message_box = age.bounding_box(), message.bounding_box()
    assert 0 <= message_box["y"] - (field_box["y"] + field_box["height"]) < 24
    expect(page.get_by_label("Software")).to_be_checked()
    expect(page.get_by_label("Auto Tuning")).not_to_be_checked()
    expect(page.locator("#result")).to_have_count(0)


def test_fixing_the_age_gives_the_result(page, base_url):
    STATES["validation-error"](page, base_url)
    page.get_by_label("Age").fill("34")
    submit(page)
    assert result_text(page) == "Age: 34 Hobbies: Software"
    expect(page.get_by_label("Age")).not_to_have_attribute("aria-invalid", "true")


@pytest.mark.parametrize("state", STATES)
def test_no_page_logs_errors_or_csp_violations(context, base_url, state):
    page = context.new_page()
    watch = ConsoleWatch(page)
    STATES[state](page, base_url)
    page.wait_for_load_state("networkidle")  # the icon too: it loads after the load event
    assert watch.problems() == []


def test_a_csp_violation_would_be_caught(context, base_url):
    # The app's own headers over a page with inline style and script: the watch must report both.
    body = "<!DOCTYPE html><title>t</title><style>p{color:red}</style><script>1</script><p>x"
    page = context.new_page()
    page.route(
        base_url + "/inline",
        lambda route: route.fulfill(
            body=body, content_type="text/html", headers=dict(SECURITY_HEADERS)
        ),
    )
    watch = ConsoleWatch(page)
    page.goto(base_url + "/inline")
    problems = watch.problems()
    assert len(problems) == 2
    assert all("Content Security Policy" in problem for problem in problems)


def test_keyboard_focus_is_clearly_visible_on_every_control(page, base_url):
    empty_form(page, base_url)
    for control in ["Age", "Software", "Auto Tuning", "Submit"]:
        page.keyboard.press("Tab")
        focused = page.locator(":focus")
        expect(focused).to_have_accessible_name(control)
        expect(focused).to_have_css("outline-style", "solid")
        expect(focused).to_have_css("outline-width", "3px")


@pytest.mark.parametrize("state", STATES)
def test_pages_fit_a_phone_screen_without_sideways_scrolling(browser, base_url, state):
    context = browser.new_context(viewport=PHONE, is_mobile=True)
    try:
        page = context.new_page()
        STATES[state](page, base_url)
        overflow = page.evaluate("document.documentElement.scrollWidth - visualViewport.width")
    finally:
        context.close()
    assert overflow <= 0
