"""`make up` serves the admin on :8000 and Flower on :5555 within 60 s, the
printed one-time password logs in, and Ctrl-C stops every process it started. With no
WHATSAPP_ACCESS_TOKEN, `make send`'s stream runs the whole loop into the stack and its replies
reach the stand-in Cloud API, not the dead letters; `make manage` runs commands against it."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
import requests
from django.conf import settings

from devtools.services import HOST, port_open, start_redis
from tests.support import kafka as kafka_support
from tests.support.browser import CHROMIUM, needs_browser
from tests.support.processes import ARTIFACTS

ROOT = Path(__file__).resolve().parents[2]
PORTS = (8000, 5555)
SITE = "http://127.0.0.1:8000"
ADMIN = SITE + "/admin/"
FLOWER = "http://127.0.0.1:5555/"
# As on a fresh clone: no token (replies go to the stand-in), no webhook secrets (made up once).
NO_WHATSAPP_SETTINGS = {
    "WHATSAPP_ACCESS_TOKEN",
    "WHATSAPP_GRAPH_BASE_URL",
    "WHATSAPP_APP_SECRET",
    "WHATSAPP_VERIFY_TOKEN",
}


def server_url(database: str) -> str:
    db = settings.DATABASES["default"]
    return f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{database}"


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def running_in_group(pgid: int) -> list[str]:
    """The live processes of a process group (zombies left for init to reap are not running)."""
    table = subprocess.run(["ps", "-eo", "pgid=,stat=,args="], capture_output=True, text=True, check=True).stdout
    rows = [line.split(None, 2) for line in table.splitlines()]
    return [row[2] for row in rows if len(row) == 3 and int(row[0]) == pgid and not row[1].startswith("Z")]


def log_in(browser, password: str, viewport: dict):
    """The admin's login form, as the operator fills it in with the password `make up` printed."""
    page = browser.new_context(viewport=viewport, accept_downloads=True).new_page()
    page.set_default_timeout(20_000)
    page.goto(ADMIN + "login/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_url(ADMIN)
    return page


@pytest.fixture
def stack_redis(tmp_path):
    """A Redis of the stack's own, so its worker never takes another test's tasks."""
    with start_redis(tmp_path / "redis") as redis:
        yield redis.url


@pytest.fixture
def stack_database():
    name = f"stack_up_{uuid.uuid4().hex[:8]}"
    yield server_url(name)
    with psycopg.connect(server_url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.slow
@needs_browser
def test_make_up_serves_admin_and_flower_and_stops_on_ctrl_c(tmp_path, stack_redis, stack_database):
    from playwright.sync_api import expect, sync_playwright

    taken = [port for port in PORTS if port_open(HOST, port, timeout=0.3)]
    if taken:
        pytest.fail(f"ports {taken} are in use; `make up` needs 8000 and 5555 free (is another `make up` running?)")
    # As on a fresh clone: no SECRET_KEY (the stack makes one and keeps it), the services given.
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "PYTEST_")) and key not in {"SECRET_KEY", *NO_WHATSAPP_SETTINGS}
    }
    env.update(
        DATABASE_URL=stack_database,
        REDIS_URL=stack_redis,
        CELERY_BROKER_URL=stack_redis,
        KAFKA_BOOTSTRAP_SERVERS=settings.KAFKA_BOOTSTRAP_SERVERS,
        KAFKA_RESULT_TOPIC=f"stack.up.{uuid.uuid4().hex[:8]}",
        KAFKA_GROUP_ID=f"stack-up-{uuid.uuid4().hex[:8]}",
        KAFKA_REQUEST_TOPIC=f"stack.request.{uuid.uuid4().hex[:8]}",
        CLASSIFIER_GROUP_ID=f"stack-classify-{uuid.uuid4().hex[:8]}",
    )
    log_path = tmp_path / "make-up.log"
    # The Makefile's own recipe, with this interpreter (the install step is the test run's own).
    make_vars = [f"STACK_DIR={tmp_path / 'stack'}", f"BIN={Path(sys.executable).parent}", "STAMP="]
    # The sample business is the default only with an embedded Postgres; this one is the test server's.
    argv = ["make", "--no-print-directory", "up", *make_vars, "ARGS=--sample-business"]
    with open(log_path, "wb") as log:
        make = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    output = lambda: log_path.read_text(errors="replace")  # noqa: E731
    try:
        begin = time.monotonic()
        while not (answers(ADMIN + "login/") and answers(FLOWER)):
            assert make.poll() is None, f"make up exited with {make.returncode}:\n{output()[-4000:]}"
            assert time.monotonic() - begin < 60, f"admin or Flower not answering after 60s:\n{output()[-4000:]}"
            time.sleep(0.5)

        passwords = re.findall(r"admin login: admin / (\S+)\s+\(printed once; change it\)", output())
        assert len(passwords) == 1, output()[-3000:]
        session = requests.Session()
        login_page = session.get(ADMIN + "login/", timeout=5)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login_page.text).group(1)
        logged_in = session.post(
            ADMIN + "login/?next=/admin/",
            timeout=5,
            headers={"Referer": ADMIN + "login/"},
            data={"username": "admin", "password": passwords[0], "csrfmiddlewaretoken": token},
        )
        assert logged_in.status_code == 200 and "| WhatsApp message handler</title>" in logged_in.text
        assert 'id="login-form"' not in logged_in.text, "still on the login page"
        assert session.get("http://127.0.0.1:8000/static/admin/css/base.css", timeout=5).status_code == 200
        assert (tmp_path / "stack" / "static" / "admin").is_dir() and (tmp_path / "stack" / "secret_key").exists()

        # No token: one banner line says replies go to the stand-in.
        assert len(re.findall(r"replies go to a local stand-in Cloud API at http://127\.0\.0\.1:\d+", output())) == 1
        env_file = tmp_path / "stack" / "env"
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
        assert f"export DATABASE_URL={stack_database}" in env_file.read_text()

        # The sample stream into the running stack, watched on the admin's live overview: every
        # message answered, at the stand-in, and the page shows them within 5 s without a reload.
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
            try:
                page = log_in(browser, passwords[0], {"width": 1280, "height": 800})
                page.goto(SITE + "/admin/overview/")
                expect(page.locator("#ov-updated")).not_to_have_text("not yet")
                expect(page.locator("#ov-processed")).to_have_text("0")
                sent = subprocess.run(
                    ["make", "--no-print-directory", "send", *make_vars],
                    cwd=ROOT,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=240,
                )
                assert sent.returncode == 0, sent.stdout[-3000:] + sent.stderr[-3000:] + output()[-3000:]
                assert "all 8 messages answered" in sent.stdout, sent.stdout
                expect(page.locator("#ov-processed")).to_have_text("8", timeout=5_000)
                replies = re.findall(r"stand-in Cloud API: reply wamid\.standin\.\d+ to 1555", output())
                assert len(replies) == 8, output()[-3000:]

                # A record that is not JSON becomes a dead letter; at 1280x800 its row shows stage,
                # reason, business, error and age without scrolling sideways, and a selection exports.
                kafka_support.produce(
                    settings.KAFKA_BOOTSTRAP_SERVERS, env["KAFKA_RESULT_TOPIC"], [(b"lead-x", b"{not json")]
                )
                rows = page.locator("#result_list tbody tr")
                deadline = time.monotonic() + 60
                while not rows.count():
                    assert time.monotonic() < deadline, "no dead letter listed 60 s after the bad record"
                    page.goto(SITE + "/admin/dlq/deadletter/")
                # Once more: a page read while ingest was committing the entry can count 0 in its
                # footer (and so offer no actions) while its list, read a moment later, has the row.
                page.goto(SITE + "/admin/dlq/deadletter/")
                expect(page.locator("select[name=action]")).to_be_visible()
                results = page.locator("#changelist .results")
                frame = results.bounding_box()
                assert frame is not None and frame["x"] + frame["width"] <= 1280, frame
                for column in ("age", "stage", "reason", "business", "short_error"):
                    box = rows.first.locator(f"td.field-{column}").bounding_box()
                    assert box is not None and box["x"] + box["width"] <= frame["x"] + frame["width"] <= 1280, column
                expect(rows.first.locator("td.field-short_error")).to_contain_text("not valid JSON")
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=ARTIFACTS / "make-up-dead-letters-1280.png")
                rows.first.locator("input.action-select").check()
                page.select_option("select[name=action]", "export_csv")
                with page.expect_download() as download:
                    page.click("button[name=index]")
                exported = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
                assert [(row["stage"], row["reason"]) for row in exported] == [("ingest", "invalid_payload")]
            finally:
                browser.close()

        managed = subprocess.run(
            ["make", "--no-print-directory", "manage", *make_vars, "ARGS=pipeline_stats --json"],
            cwd=ROOT,
            env={key: value for key, value in env.items() if key not in {"DATABASE_URL", "REDIS_URL"}},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert managed.returncode == 0, managed.stdout[-2000:] + managed.stderr[-2000:]
        stats = json.loads(managed.stdout)
        assert stats["processed"] == 8 and stats["failed"] == 0, stats
        assert stats["replies"] == {"SENT": 8}, stats
        # The one dead letter is the bad record's; no reply was dead-lettered.
        assert stats["dead_letters"]["total"] == 1, stats
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGINT)  # Ctrl-C in the terminal
        try:
            code = make.wait(45)
        except subprocess.TimeoutExpired:
            os.killpg(make.pid, signal.SIGKILL)
            raise AssertionError(f"make up still running 45s after Ctrl-C:\n{output()[-4000:]}") from None
    # make passes a Ctrl-C on by ending itself with SIGINT once its recipe has stopped.
    assert code in (0, -signal.SIGINT), output()[-3000:]
    assert "Traceback" not in output(), output()[-3000:]
    started = [int(pid) for pid in re.findall(r"\| \w+ started \(pid=(\d+)\)", output())]
    assert len(started) == 7, output()[-3000:]  # web, ingest, relay, classify, worker, beat, flower
    # Every process honcho started ran in a process group of its own.
    left = [command for pgid in [*started, make.pid] for command in running_in_group(pgid)]
    assert not left, f"left running after Ctrl-C: {left}"
    assert not any(port_open(HOST, port, timeout=0.3) for port in PORTS)
