"""The console driven in a real Chromium (Debian's ``chromium``, through Playwright pointed at that
executable; ``playwright install`` is never run) against a real ``stormwatch serve`` process on a
store filled by the real pipeline: sign in with the keyboard, work a case from the queue to closed,
decide an appeal, and a read-only token never sees prompt text. Screenshots of every view are saved
as test artifacts (``$STORMWATCH_ARTIFACTS/console/``, else a temporary folder); with
``STORMWATCH_CONSOLE_DOC_IMAGES=1`` they are also copied to ``docs/img/console/`` for the docs.

Skipped, saying why, only when the browser is not installed (``.ci/run`` installs it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from test_api_serve import free_port
from test_console import REPO, Demo, build_demo, first_event

CHROMIUM = Path(os.environ.get("STORMWATCH_CHROMIUM", "/usr/bin/chromium"))
DOC_IMAGES = REPO / "docs" / "img" / "console"
VIEWPORT = {"width": 1280, "height": 800}

if not CHROMIUM.exists():  # pragma: no cover - .ci/run installs it; never skipped silently
    pytest.fail(
        f"{CHROMIUM} is missing: `apt-get install -y chromium` to run the console's browser tests", pytrace=False
    )

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    with pytest.MonkeyPatch.context() as mp:
        yield build_demo(tmp_path_factory.mktemp("console-browser"), mp)


@pytest.fixture(scope="module")
def base_url(demo: Demo) -> Iterator[str]:
    port = free_port()
    log = demo.dir / "serve.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "STORMWATCH_POLICIES": str(REPO / "policies")}
    env.pop("STORMWATCH_SHARE_POLICY", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stormwatch", "serve", "--db", demo.db, "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(base + "/console/login", timeout=2)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start:\n{log.read_text()}") from None
                time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
    server_log = log.read_text(encoding="utf-8", errors="replace")
    for token in demo.tokens.values():
        assert token not in server_log  # sign-ins are logged by token id, never the token


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = os.environ.get("STORMWATCH_ARTIFACTS")
    out = Path(root) / "console" if root else tmp_path_factory.mktemp("console-screenshots")
    out.mkdir(parents=True, exist_ok=True)
    print(f"console screenshots: {out}", file=sys.stderr)
    return out


def shoot(page: Page, shots: Path, name: str) -> None:
    page.wait_for_load_state()
    path = shots / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    assert path.stat().st_size > 5_000
    if os.environ.get("STORMWATCH_CONSOLE_DOC_IMAGES") == "1":
        DOC_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOC_IMAGES / path.name)


class Session:
    """A browser context (its own cookies) signed in with one token, collecting console errors."""

    def __init__(self, browser: Browser, base: str) -> None:
        self.context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
        self.page = self.context.new_page()
        self.base = base
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def sign_in_with_the_keyboard(self, token: str) -> None:
        page = self.page
        page.goto(self.base + "/console/")
        expect(page).to_have_url(self.base + "/console/login?next=%2Fconsole%2F")
        expect(page.locator("#token")).to_be_focused()  # autofocus: no mouse needed
        page.keyboard.type(token)
        page.keyboard.press("Enter")
        expect(page.locator("h1")).to_have_text("Review queue")

    def close(self) -> None:
        self.context.close()
        csp = [e for e in self.errors if "Content Security Policy" in e or "Refused" in e]
        assert not csp, csp


def test_an_analyst_works_a_case_from_the_queue_to_closed(
    browser: Browser, base_url: str, demo: Demo, shots: Path
) -> None:
    s = Session(browser, base_url)
    page = s.page
    s.sign_in_with_the_keyboard(demo.tokens["analyst"])
    shoot(page, shots, "queue")
    # the skip link is the first stop of the keyboard, and it moves the focus to the content
    page.keyboard.press("Tab")
    expect(page.locator("a.skip")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#main")).to_be_focused()
    # filter the queue (htmx swaps the rows in place), then back to the review level
    page.select_option("select[name=level]", "enforce")
    expect(page.locator("#queue-rows .level").first).to_have_text("enforce")
    page.select_option("select[name=level]", "review")
    expect(page.locator("#queue-rows .level").first).to_have_text("review")
    page.click(f'#queue-rows a[href="/console/accounts/{demo.review}"]')
    expect(page.locator("h1")).to_have_text(f"Account {demo.review}")
    shoot(page, shots, "account")
    # prompt text on request: the read is audited before it is shown
    page.locator("button", has_text="Show text").first.click()
    expect(page.locator(".prompt").first).to_contain_text("Read recorded in the audit chain")
    page.locator("#tl-h").scroll_into_view_if_needed()
    shoot(page, shots, "account-timeline")
    page.click("text=Open case")
    expect(page.locator("#case-status")).to_have_text("open")
    page.click("button:has-text('Assign')")
    expect(page.locator("#case-assignee")).to_have_text("alice")
    page.focus("#note")
    page.keyboard.type("Recon prompts against a VPN provider; matches the cluster's pattern.")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")  # the "Add note" button, by keyboard
    expect(page.locator(".notes")).to_contain_text("Recon prompts against a VPN provider")
    page.fill("#evidence", "https://tickets.example.net/SW-1042")
    page.click("button:has-text('Attach')")
    expect(page.locator(".notes")).to_contain_text("SW-1042")
    page.check("input[name=label][value=true_positive]")
    page.fill("#label-category", "LLMT-recon")
    page.click("button:has-text('Label')")
    expect(page.locator("#case-label")).to_contain_text("true_positive")
    shoot(page, shots, "case")
    page.fill("#resolution", "confirmed; handed to enforcement")
    page.click("button:has-text('Close case')")
    expect(page.locator("#case-status")).to_have_text("closed")
    s.close()


def test_an_admin_decides_an_appeal_and_sees_every_view(
    browser: Browser, base_url: str, demo: Demo, shots: Path
) -> None:
    s = Session(browser, base_url)
    page = s.page
    s.sign_in_with_the_keyboard(demo.tokens["admin"])
    page.click("nav >> text=Appeals")
    row = page.locator(f"#appeal-{demo.appeal}")
    expect(row).to_contain_text("open")
    row.locator("input[value=reinstate]").check()
    row.locator("input[name=note]").fill("research firm confirmed by the partner team")
    shoot(page, shots, "appeals")
    row.locator("button:has-text('Decide')").click()
    expect(page.locator(f"#appeal-{demo.appeal}")).to_contain_text("reinstated")
    for view, name in (("Clusters", "clusters"), ("Cases", "cases"), ("Policy dry run", "policy"),
                       ("Audit chain", "audit"), ("Sharing outbox", "outbox"), ("Charts", "charts")):  # fmt: skip
        page.click(f"nav >> text={view}")
        expect(page.locator("h1")).to_have_text(view if view != "Policy dry run" else "Policy dry run")
        shoot(page, shots, name)
    expect(page.locator("svg.chart").first).to_be_visible()
    page.goto(f"{base_url}/console/audit")
    expect(page.locator(".flash.ok")).to_contain_text("Intact")
    page.goto(f"{base_url}/console/clusters/{demo.cluster}")
    expect(page.locator("svg.chart circle").first).to_be_visible()
    shoot(page, shots, "cluster")
    # sign out by keyboard: focus the button and press Enter
    page.focus("header button:has-text('Sign out')")
    page.keyboard.press("Enter")
    expect(page.locator("h1")).to_have_text("Sign in")
    page.goto(f"{base_url}/console/queue")
    expect(page.locator("h1")).to_have_text("Sign in")
    s.close()


def test_a_read_only_token_never_sees_prompt_text(browser: Browser, base_url: str, demo: Demo, shots: Path) -> None:
    s = Session(browser, base_url)
    page = s.page
    s.sign_in_with_the_keyboard(demo.tokens["read-only"])
    page.goto(f"{base_url}/console/accounts/{demo.flagged}")
    expect(page.locator("#text-hidden")).to_be_visible()
    expect(page.locator("button", has_text="Show text")).to_have_count(0)
    expect(page.locator(".prompt")).to_have_count(0)
    page.locator("#tl-h").scroll_into_view_if_needed()
    shoot(page, shots, "account-read-only")
    event = first_event(demo.db, demo.flagged)
    response: Any = page.goto(f"{base_url}/console/events/{event}/text")
    assert response is not None and response.status == 403
    expect(page.locator(".flash.error")).to_contain_text("may not events:text")
    s.close()
