"""Pages that misbehave, run by ``test_browser_harness.py`` in a pytest of their own: each must fail
(a console error, an uncaught exception, a failing assertion) and leave a screenshot.
Not collected by the suite itself (the name does not start with ``test_``)."""


def test_console_error(page):
    page.set_content("<p>console</p><script>console.error('console says boom')</script>")
    page.wait_for_timeout(200)


def test_uncaught_exception(page):
    page.set_content("<p>exception</p><script>setTimeout(() => { throw new Error('page says bang'); }, 0)</script>")
    page.wait_for_timeout(300)


def test_failing_assertion(page):
    page.set_content("<p>assertion</p>")
    assert page.text_content("p") == "something else"
