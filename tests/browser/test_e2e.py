"""The form in a real browser, used as a person would: with the mouse, or the keyboard alone;
what it saves, once, whatever the person does with Back, Reload and Submit."""

from helpers import hobbies_shown, submitted
from pages import INVALID, PHONE, STATES, ConsoleWatch, empty_form, example, fill, reach, submit
from playwright.sync_api import expect

import app
from guards import SECURITY_HEADERS


def result_text(page) -> str:
    """Return the result line as the browser shows it, whitespace folded."""
    return " ".join(page.locator("#result").inner_text().split())


def expect_example_saved(page) -> None:
    """Check that the page is the saved page of the app's example submission."""
    expect(page.get_by_role("heading", name="Saved")).to_be_visible()
    age, hobbies = app.EXAMPLE["age"][0], app.EXAMPLE["hobbies"]
    assert f"Age: {age} {hobbies_shown(hobbies)}" in result_text(page)


def controls(page):
    """Return the form's controls that a person uses, in the page's order (the tab order): not
    the hidden token, nor the bot trap (app.TRAP)."""
    return page.locator(f'form input:not([type="hidden"]):not([name="{app.TRAP}"]), form button')


def token(page) -> str:
    """Return the one-time token of the form on the page."""
    return page.locator('form [name="token"]').input_value()


def accessible_names(page, role: str) -> list[str]:
    """Return the names of the elements of a role in Chromium's own accessibility tree, the one
    screen readers are given."""
    session = page.context.new_cdp_session(page)
    try:
        nodes = session.send("Accessibility.getFullAXTree")["nodes"]
    finally:
        session.detach()
    return [
        node["name"]["value"]
        for node in nodes
        if not node["ignored"] and node.get("role", {}).get("value") == role
    ]


def expect_ticked(page, hobbies: list[str]) -> None:
    """Check that exactly these hobbies' boxes are ticked."""
    for value, label in app.HOBBIES.items():
        box = expect(page.get_by_label(label, exact=True))
        box.to_be_checked() if value in hobbies else box.not_to_be_checked()


def test_clicking_submit_lands_on_the_page_of_what_was_saved(page, base_url):
    empty_form(page, base_url)
    sent = token(page)
    fill(page)
    assert submit(page).status == 200
    expect(page).to_have_url(f"{base_url}/saved/{sent}")  # the form's token names the page
    expect_example_saved(page)


def test_the_form_works_with_the_keyboard_alone(page, base_url):
    empty_form(page, base_url)
    used = controls(page)
    values = example(age=["7"])
    for index in range(used.count() - 1):
        control = used.nth(index)
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


def test_fixing_the_age_saves_the_submission_under_the_forms_token(page, base_url):
    empty_form(page, base_url)
    sent = token(page)
    fill(page, **INVALID)
    submit(page)
    assert token(page) == sent  # the form with its errors keeps its token
    page.get_by_label("Age").fill("34")
    submit(page)
    expect(page).to_have_url(f"{base_url}/saved/{sent}")
    assert f"Age: 34 {hobbies_shown(INVALID['hobbies'])}" in result_text(page)


def test_a_submission_that_cannot_be_saved_keeps_the_values_and_says_so(page, unsaved_url):
    empty_form(page, unsaved_url)
    sent = token(page)
    fill(page)
    assert submit(page).status == 503
    alert = page.get_by_role("alert")
    expect(alert).to_have_attribute("id", "unsaved")
    expect(alert).to_contain_text("could not be saved")
    expect(page).to_have_title(f"Error: {app.TITLE}")
    expect(page.get_by_label("Age")).to_have_value(app.EXAMPLE["age"][0])
    expect_ticked(page, app.EXAMPLE["hobbies"])
    assert token(page) == sent  # sent again, it is the same submission


def test_a_saved_page_nobody_was_given_is_not_found(page, base_url):
    assert STATES["not-saved"](page, base_url).status == 404
    expect(page.get_by_role("heading", level=1)).to_have_text("404 Not Found")
    expect(page.get_by_text(app.NOT_SAVED)).to_be_visible()
    expect(page.locator("#result")).to_have_count(0)


def test_reloading_and_going_back_and_forth_send_nothing_again(page, counted):
    STATES["result"](page, counted.url)
    saved = page.url
    assert counted.database.count() == 1
    sent = []  # the method of every page request from here on

    def record(request):
        if request.is_navigation_request():
            sent.append(request.method)

    page.on("request", record)
    try:
        page.reload()
        page.go_back()
        expect(page).to_have_url(counted.url + "/")  # the form, not the POST: its 303 replaced it
        page.reload()
        page.go_forward()
    finally:
        page.remove_listener("request", record)
    expect(page).to_have_url(saved)
    expect_example_saved(page)
    assert sent == ["GET"] * 4
    assert counted.database.count() == 1


def test_a_double_click_on_submit_stores_one_row(page, counted):
    # Chromium sends one POST for a double click, or two when the second click lands before
    # the first navigation commits (that one then ends ERR_ABORTED): the same token either way,
    # stored once. The next test sends the form's token twice for certain.
    empty_form(page, counted.url)
    sent = token(page)
    fill(page)
    page.get_by_role("button", name="Submit").dblclick()
    expect(page).to_have_url(f"{counted.url}/saved/{sent}")
    expect_example_saved(page)
    assert counted.database.count() == 1


def test_submit_clicked_again_after_stopping_the_page_stores_one_row(page, counted):
    # The first POST reaches the app, which saves it; its answer is slow to come, and the
    # person stops the page (Esc), which leaves the form as it was, and clicks Submit again.
    empty_form(page, counted.url)
    fill(page)
    lost = []

    def lose_the_first_answer(route):
        if route.request.method == "POST" and not lost:
            lost.append(route.fetch(max_redirects=0))
            route.abort("aborted")  # what stopping a page does to its request
        else:
            route.fallback()

    page.route(counted.url + "/", lose_the_first_answer)
    try:
        page.get_by_role("button", name="Submit").click()
        expect(page.get_by_label("Age")).to_have_value(app.EXAMPLE["age"][0])  # still there
        assert counted.database.count() == 1
        submit(page)
    finally:
        page.unroute(counted.url + "/", lose_the_first_answer)
    assert [answer.status for answer in lost] == [303]  # the app had answered the first
    expect(page).to_have_url(counted.url + lost[0].headers["location"])  # the same token
    expect_example_saved(page)
    assert counted.database.count() == 1


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


def test_the_bot_trap_is_skipped_by_tab_and_hidden_from_screen_readers(page, base_url):
    empty_form(page, base_url)
    trap = page.locator(f'form [name="{app.TRAP}"]')
    expect(trap).to_have_count(1)
    focused = []
    for _ in range(controls(page).count() + 1):  # every control, then out of the form
        page.keyboard.press("Tab")
        focused.append(page.evaluate("document.activeElement.name"))
    assert app.TRAP not in focused
    assert "age" in focused  # the names were read
    # The text fields screen readers are given: the form's fields, named by their labels, and
    # not the trap.
    fields = [name.replace("_", " ").capitalize() for name in app.FIELDS]
    expect(page.get_by_role("textbox")).to_have_count(len(fields))
    assert accessible_names(page, "textbox") == fields


def test_keyboard_focus_is_clearly_visible_on_every_control(page, base_url):
    empty_form(page, base_url)
    used = controls(page)
    assert used.count() > len(app.HOBBIES)  # the boxes, and more
    for index in range(used.count()):
        page.keyboard.press("Tab")
        expect(used.nth(index)).to_be_focused()
        focused = page.locator(":focus")
        expect(focused).to_have_css("outline-style", "solid")
        expect(focused).to_have_css("outline-width", "3px")


def test_pages_fit_a_phone_screen_without_sideways_scrolling(browser, base_url, unsaved_url):
    context = browser.new_context(viewport=PHONE, is_mobile=True)
    overflow = {}  # pixels wider than the screen, by state
    try:
        page = context.new_page()
        for state in STATES:
            reach(page, state, base_url, unsaved_url)
            overflow[state] = page.evaluate(
                "document.documentElement.scrollWidth - visualViewport.width"
            )
    finally:
        context.close()
    assert {state: pixels for state, pixels in overflow.items() if pixels > 0} == {}


def test_the_owner_sees_a_chart_for_each_table_that_screen_readers_read(page, base_url):
    assert STATES["results"](page, base_url).status == 200
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Results: {app.TITLE}")
    tables = page.get_by_role("table")  # in the accessibility tree, each with its caption
    expect(tables).to_have_count(2 + len(app.FIELDS))  # the hobbies, each field, the days
    expect(page.get_by_role("table", name="Hobbies chosen")).to_have_count(1)
    charts = page.locator("svg.chart")
    expect(charts).to_have_count(tables.count())
    for index in range(charts.count()):  # each chart seen; its table read, not seen
        assert charts.nth(index).bounding_box()["height"] >= 28  # a row of bars at least
        assert tables.nth(index).locator("..").bounding_box()["width"] <= 1
