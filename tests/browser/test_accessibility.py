"""axe-core finds no accessibility violations in any state of the page."""

import pytest
from axe_playwright_python.sync_playwright import Axe
from pages import STATES
from playwright.sync_api import expect

import app

# Every rule axe-core runs by default: WCAG 2.x A and AA, plus its best practices (one main
# landmark, one h1, all content inside landmarks, ...).
AXE = Axe()


@pytest.mark.parametrize("state", STATES)
def test_axe_finds_no_violations(page, base_url, state):
    STATES[state](page, base_url)
    results = AXE.run(page)
    assert results.violations_count == 0, results.generate_report()


@pytest.mark.parametrize("state", STATES)
def test_page_has_a_language_a_title_one_h1_and_a_main_landmark(page, base_url, state):
    STATES[state](page, base_url)
    expect(page.locator("html")).to_have_attribute("lang", "en")
    assert page.title()
    expect(page.get_by_role("heading", level=1)).to_have_count(1)
    expect(page.get_by_role("main")).to_have_count(1)


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
