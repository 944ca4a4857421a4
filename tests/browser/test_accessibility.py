"""axe-core finds no accessibility violations in any state of the page, which logs no error."""

from axe_playwright_python.sync_playwright import Axe
from pages import STATES
from playwright.sync_api import expect

import app

# Every rule axe-core runs by default: WCAG 2.x A and AA, plus its best practices (one main
# landmark, one h1, all content inside landmarks, ...).
AXE = Axe()


def test_axe_finds_no_violations(page, base_url):
    reports = {}
    for state, reach in STATES.items():
        reach(page, base_url)
        # The icon too, which loads after the load event: the page fixture fails the test on
        # any console error or CSP violation, in any state.
        page.wait_for_load_state("networkidle")
        results = AXE.run(page)
        if results.violations_count:
            reports[state] = results.generate_report()
    assert reports == {}, "\n".join(f"{state}: {report}" for state, report in reports.items())


def test_every_control_has_a_label_and_the_boxes_a_legend(page, base_url):
    STATES["empty-form"](page, base_url)
    inputs = page.locator("input")
    assert inputs.count() > len(app.HOBBIES)
    for index in range(inputs.count()):  # every one: a label of its own, with text
        assert inputs.nth(index).evaluate("input => input.labels[0].textContent.trim() !== ''")
    expect(page.get_by_label("Age", exact=True)).to_have_count(1)
    hobbies = page.get_by_role("group", name="Hobbies")
    expect(hobbies.get_by_role("checkbox")).to_have_count(len(app.HOBBIES))
    for label in app.HOBBIES.values():
        expect(hobbies.get_by_label(label, exact=True)).to_have_count(1)
    expect(page.get_by_role("button", name="Submit")).to_have_count(1)
