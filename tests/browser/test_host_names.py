"""The form at a real host name, as people elsewhere reach it: over HTTPS through the shipped
proxy, and over plain HTTP straight to Waitress (the Procfile's server).

Chromium resolves form.test to 127.0.0.1 (pages.CHROMIUM_ARGS). At a host name over plain HTTP it
sends no Sec-Fetch-Site, so the app's Origin check decides: this is the case that got 403 while the
app sent `Referrer-Policy: no-referrer`, which makes a browser send `Origin: null`.
"""

import pytest
from helpers import hobbies_shown
from pages import fill, submit

import app


@pytest.mark.parametrize("way", ["https through nginx", "http straight to waitress"])
def test_the_form_works_at_a_host_name(request, page, servers, way):
    if way.startswith("https"):
        url = f"https://form.test:{request.getfixturevalue('proxy').port}"
    else:
        url = f"http://form.test:{servers('procfile').port}"
    [age], hobbies = app.EXAMPLE["age"], app.EXAMPLE["hobbies"]
    page.goto(url + "/")
    token = page.locator('form [name="token"]').input_value()
    fill(page)
    submit(page)
    assert page.url == f"{url}/saved/{token}"  # the app's redirect kept the host and scheme
    result = " ".join(page.locator("#result").inner_text().split())
    assert f"Age: {age} {hobbies_shown(hobbies)}" in result
