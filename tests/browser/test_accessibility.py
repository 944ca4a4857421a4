"""axe-core finds no accessibility violations in any state of the pages, which log no error."""

from axe_playwright_python.sync_playwright import Axe
from pages import STATES, reach
from playwright.sync_api import expect

import app

# Every rule axe-core runs by default: WCAG 2.x A and AA, plus its best practices (one main
# landmark, one h1, all content inside landmarks, ...).
AXE = Axe()


def test_axe_finds_no_violations(page, base_url, unsaved_url):
    reports = {}
    passed = {}  # state -> the rules that applied, and passed
    for state in STATES:
        reach(page, state, base_url, unsaved_url)
        # The icon too, which loads after the load event: the page fixture fails the test on
        # any console error or CSP violation, in any state.
        page.wait_for_load_state("networkidle")
        results = AXE.run(page)
        if results.violations_count:
            reports[state] = results.generate_report()
        passed[state] = {rule["id"] for rule in results.response["passes"]}
    assert reports == {}, "\n".join(f"{state}: {report}" for state, report in reports.items())
    # The bot trap was checked: hidden from screen readers, and nothing in it that Tab reaches.
    assert "aria-hidden-focus" in passed["empty-form"]


def test_every_control_has_a_label_and_the_boxes_a_legend(page, base_url):
    STATES["empty-form"](page, base_url)
    inputs = page.locator('input:not([type="hidden"])')
    assert inputs.count() > len(app.HOBBIES)
    for index in range(inputs.count()):  # every one: a label of its own, with text
        assert inputs.nth(index).evaluate("input => input.labels[0].textContent.trim() !== ''")
    expect(page.get_by_label("Age", exact=True)).to_have_count(1)
    hobbies = page.get_by_role("group", name="Hobbies")
    expect(hobbies.get_by_role("checkbox")).to_have_count(len(app.HOBBIES))
    for label in app.HOBBIES.values():
        expect(hobbies.get_by_label(label, exact=True)).to_have_count(1)
    expect(page.get_by_role("button", name="Submit")).to_have_count(1)
