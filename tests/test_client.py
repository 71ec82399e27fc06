"""The Klaviyo HTTP client against the emulator: pacing, retries, typed outcomes, secrets.

Everything is observed the way Klaviyo would see it (the emulator's request log) or the way a
user would (the `ApiResult`, the exception message, the CLI's output and files).
"""

from __future__ import annotations

import bisect
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from target_klaviyo.klaviyo.client import (
    ApiResult,
    ConfigError,
    KlaviyoAuthError,
    KlaviyoClient,
    check_base_url,
)
from target_klaviyo.klaviyo.operations import OPERATIONS
from target_klaviyo.klaviyo.pacing import Pacer
from tests.emulator import Emulator, LoggedRequest
from tests.emulator import server as emulator_server
from tests.support import (
    INTEGER,
    STRING,
    base_config,
    run_target,
    singer_lines,
    stream_messages,
)

SCALE = 0.05


def make_client(emulator: Emulator, **options: object) -> KlaviyoClient:
    settings: dict = {"private_key": emulator.private_key, "base_url": emulator.base_url}
    settings.update(options)
    return KlaviyoClient(**settings)


class Sleeps:
    """An injected `sleep` that records instead of waiting (keeps backoff tests fast)."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def requests_for(emulator: Emulator, operation: str, at_least: int = 0) -> list[LoggedRequest]:
    """The emulator's log of `operation`.

    The emulator logs a request after answering it, so a client can see the answer a moment
    before the log does: wait (briefly) for `at_least` entries.
    """
    deadline = time.monotonic() + 5
    while True:
        found = [entry for entry in emulator.request_log if entry.operation == operation]
        if len(found) >= at_least or time.monotonic() > deadline:
            return found
        time.sleep(0.01)


def busiest_window(times: list[float], length: float) -> int:
    """The most requests that any sliding window of `length` seconds holds."""
    ordered = sorted(times)
    return max(
        (bisect.bisect_left(ordered, start + length) - i for i, start in enumerate(ordered)),
        default=0,
    )


def profile_body(email: str, phone: str | None = None) -> bytes:
    attributes = {"email": email}
    if phone:
        attributes["phone_number"] = phone
    return json.dumps({"data": {"type": "profile", "attributes": attributes}}).encode()


# -- pacing -------------------------------------------------------------------------------------


@pytest.fixture
def no_nagle(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the emulator answer as fast as it can, so the client's pacing is what limits it.

    (With Nagle's algorithm on, each keep-alive answer waits ~40 ms for a delayed ACK.)
    """
    monkeypatch.setattr(emulator_server._Handler, "disable_nagle_algorithm", True, raising=False)


@pytest.mark.emulator(window_scale=SCALE)
def test_threads_sharing_one_client_stay_inside_burst_and_steady_windows(
    no_nagle: None, emulator: Emulator
) -> None:
    client = make_client(emulator, window_scale=SCALE, max_retries=0)
    job = client.request(
        "bulk_import_profiles",
        body=json.dumps(
            {
                "data": {
                    "type": "profile-bulk-import-job",
                    "attributes": {
                        "profiles": {
                            "data": [{"type": "profile", "attributes": {"email": "a@example.com"}}]
                        }
                    },
                }
            }
        ).encode(),
    )
    assert job.status == 202, job.describe()
    job_id = job.body["data"]["id"]

    m_tier, l_tier = "get_bulk_import_profiles_job", "get_profiles"
    m_steady = OPERATIONS[m_tier].tier.steady_per_min
    stop = threading.Event()
    outcomes: list[int | None] = []
    lock = threading.Lock()

    def hammer(call: Callable[[], ApiResult], count: int | None = None) -> None:
        sent = 0
        while not stop.is_set() and (count is None or sent < count):
            result = call()
            sent += 1
            with lock:
                outcomes.append(result.status)

    def poll_job() -> ApiResult:
        return client.request(m_tier, path_params={"id": job_id})

    def read_profiles() -> ApiResult:
        return client.request(l_tier, params={"page[size]": 1})

    # Enough M-tier requests to cross a steady window (150 per 60 s x scale) by a margin.
    per_thread = (m_steady + 30) // 4
    m_threads = [threading.Thread(target=hammer, args=(poll_job, per_thread)) for _ in range(4)]
    l_threads = [threading.Thread(target=hammer, args=(read_profiles,)) for _ in range(4)]
    for thread in m_threads + l_threads:
        thread.start()
    for thread in m_threads:
        thread.join(timeout=30)
    stop.set()
    for thread in l_threads:
        thread.join(timeout=30)
    client.close()

    assert len(requests_for(emulator, m_tier, per_thread * 4)) == per_thread * 4
    statuses = Counter(entry.status for entry in emulator.request_log)
    assert statuses[429] == 0, f"the emulator throttled the client: {statuses}"
    assert set(outcomes) == {200}
    for name in (m_tier, l_tier):
        tier = OPERATIONS[name].tier
        times = [entry.started for entry in requests_for(emulator, name)]
        assert busiest_window(times, 1.0 * SCALE) <= tier.burst_per_s, name
        assert busiest_window(times, 60.0 * SCALE) <= tier.steady_per_min, name
    # The M tier really was held back by its steady window, not just by slow answers.
    m_times = sorted(entry.started for entry in requests_for(emulator, m_tier))
    assert m_times[-1] - m_times[0] >= 60.0 * SCALE


def test_pacer_keeps_a_large_tier_inside_sliding_windows() -> None:
    """The L tier (75/s, 750/min) on a virtual clock: no real waiting, exact windows."""
    now = [0.0]
    pacer = Pacer(clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    operation = OPERATIONS["get_profiles"]
    sent = []
    for _ in range(2000):
        pacer.acquire(operation)
        sent.append(now[0])
        now[0] += 0.001  # each answer takes 1 ms
        pacer.release(operation)
    assert busiest_window(sent, 1.0) <= operation.tier.burst_per_s
    assert busiest_window(sent, 60.0) <= operation.tier.steady_per_min
    # ... and it does not hold back more than it has to: 2000 requests need 2 steady windows.
    assert sent[-1] < 3 * 60.0 * 1.1


def test_the_client_tells_when_a_write_waits_for_its_window(emulator: Emulator) -> None:
    """A stream's reading thread asks before it hands lines to its mapping process: while a
    write waits for its rate-limit window, reading faster gains nothing. A read waiting for
    its own window does not count: the run is following jobs, not held back sending. (Real
    windows, so that the waits come however slowly the machine answers: about 2 s.)"""
    seen: dict[str, list[bool]] = {"read": [], "write": []}
    doing = ["read"]

    def sleep(seconds: float) -> None:
        seen[doing[0]].append(client.writes_waiting())
        time.sleep(seconds)

    client = make_client(emulator, max_retries=0, sleep=sleep)
    for _ in range(2):  # XS: one a second, so the second waits
        assert client.request("get_accounts").ok
    doing[0] = "write"
    body = json.dumps(
        {
            "data": {
                "type": "data-privacy-deletion-job",
                "attributes": {
                    "profile": {"data": {"type": "profile", "attributes": {"email": "a@b.co"}}}
                },
            }
        }
    ).encode()
    for _ in range(4):  # S: three a second, so the fourth waits
        client.request("request_profile_deletion", body=body)

    assert seen["read"] and not any(seen["read"])
    assert seen["write"] and all(seen["write"])
    assert not client.writes_waiting()


# -- 429 ----------------------------------------------------------------------------------------


def test_429_with_retry_after_waits_before_retrying(emulator: Emulator) -> None:
    emulator.add_fault("429", "get_profiles", retry_after=1)
    client = make_client(emulator, max_retries=2)

    result = client.request("get_profiles", params={"page[size]": 1})

    assert result.ok and not result.exhausted
    first, retry = requests_for(emulator, "get_profiles", 2)
    assert first.status == 429 and retry.status == 200
    assert not retry.retry_after_violation
    assert retry.started - first.ended >= 1.0
    assert client.rate_limit_wait_s >= 1.0


def test_429_without_retry_after_backs_off_then_succeeds(emulator: Emulator) -> None:
    emulator.add_fault("429", "get_profiles", retry_after=None)
    sleeps = Sleeps()
    client = make_client(emulator, max_retries=2, sleep=sleeps)

    result = client.request("get_profiles", params={"page[size]": 1})

    assert result.ok
    assert [entry.status for entry in requests_for(emulator, "get_profiles", 2)] == [429, 200]
    assert len(sleeps.calls) == 1 and 0 <= sleeps.calls[0] <= 0.5
    # Backing off after a 429 is time spent on rate limits too.
    assert client.rate_limit_wait_s == pytest.approx(sum(sleeps.calls))


def test_429_storm_longer_than_max_retries_is_exhausted_not_raised(emulator: Emulator) -> None:
    emulator.add_fault("429", "get_profiles", count=None, retry_after=1)
    sleeps = Sleeps()
    client = make_client(emulator, max_retries=2, sleep=sleeps)

    result = client.request("get_profiles", params={"page[size]": 1})

    assert result.exhausted and not result.ok
    assert result.status == 429
    assert "429" in result.describe() and "2 retries" in result.describe()
    assert len(requests_for(emulator, "get_profiles", 3)) == 3
    assert len(sleeps.calls) == 2 and all(wait >= 1.0 for wait in sleeps.calls)
    assert client.rate_limit_wait_s >= 2.0
    assert client.calls["get_profiles"] == 3


def test_retry_after_beyond_the_in_run_limit_gives_up_at_once(emulator: Emulator) -> None:
    emulator.add_fault("429", "get_profiles", retry_after=3600)
    sleeps = Sleeps()
    client = make_client(emulator, max_retries=5, sleep=sleeps)

    result = client.request("get_profiles", params={"page[size]": 1})

    assert result.exhausted
    assert "Retry-After" in result.describe() and "0 retries" in result.describe()
    assert len(requests_for(emulator, "get_profiles", 1)) == 1
    assert sleeps.calls == []


# -- 5xx, resets, timeouts ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["500", "503", "504", "524", "reset"])
def test_server_and_connection_errors_are_retried_with_backoff(
    emulator: Emulator, kind: str
) -> None:
    emulator.add_fault(kind, "get_profiles", count=2)
    sleeps = Sleeps()
    client = make_client(emulator, max_retries=3, sleep=sleeps)

    result = client.request("get_profiles", params={"page[size]": 1})

    assert result.ok, result.describe()
    assert len(requests_for(emulator, "get_profiles", 3)) == 3
    # Exponential backoff with full jitter: 0-0.5 s, then 0-1 s.
    assert len(sleeps.calls) == 2
    assert 0 <= sleeps.calls[0] <= 0.5 and 0 <= sleeps.calls[1] <= 1.0
    assert client.rate_limit_wait_s == 0  # server errors are not rate limits


@pytest.mark.parametrize("kind", ["503", "524", "reset"])
def test_persistent_server_errors_are_exhausted_after_max_retries(
    emulator: Emulator, kind: str
) -> None:
    emulator.add_fault(kind, "get_profiles", count=None)
    client = make_client(emulator, max_retries=2, sleep=Sleeps())

    result = client.request("get_profiles", params={"page[size]": 1})

    assert result.exhausted and not result.ok
    assert len(requests_for(emulator, "get_profiles", 3)) == 3
    expected = "connection error" if kind == "reset" else kind
    assert expected in result.describe()


def test_read_timeout_is_retried(emulator: Emulator) -> None:
    emulator.add_fault("timeout", "get_profiles", delay_s=2.0)
    sleeps = Sleeps()
    client = make_client(emulator, max_retries=2, timeout_s=0.5, sleep=sleeps)

    result = client.request("get_profiles", params={"page[size]": 1})

    assert result.ok, result.describe()
    assert client.calls["get_profiles"] == 2
    assert len(sleeps.calls) == 1


def test_read_timeouts_until_exhausted(emulator: Emulator) -> None:
    emulator.add_fault("timeout", "get_profiles", count=2, delay_s=2.0)
    client = make_client(emulator, max_retries=1, timeout_s=0.5, sleep=Sleeps())

    result = client.request("get_profiles", params={"page[size]": 1})

    assert result.exhausted
    assert "timed out" in result.describe()


# -- answers that are not retried ---------------------------------------------------------------


@pytest.mark.emulator(supported_regions={"US"})
def test_400_is_not_retried_and_its_errors_are_parsed(emulator: Emulator) -> None:
    emulator.expect_violations(1)  # the account cannot send to +44 numbers
    client = make_client(emulator, max_retries=3, sleep=Sleeps())

    result = client.request(
        "create_or_update_profile", body=profile_body("a@example.com", "+442079460958")
    )

    assert result.status == 400 and not result.ok and not result.exhausted
    assert len(requests_for(emulator, "create_or_update_profile", 1)) == 1
    (error,) = result.errors
    assert error.pointer == "/data/attributes/phone_number"
    assert "supported region" in error.detail
    assert error.code == "invalid" and error.status == 400
    assert "supported region" in result.describe()


def test_cloudflare_html_403_is_named_in_the_outcome_not_raised(emulator: Emulator) -> None:
    emulator.add_fault("html403", "get_profiles", count=None)
    client = make_client(emulator, max_retries=1, sleep=Sleeps())

    result = client.request("get_profiles", params={"page[size]": 1})

    assert not result.ok and result.status == 403
    assert "Cloudflare" in result.describe()


def test_cloudflare_challenge_then_success(emulator: Emulator) -> None:
    emulator.add_fault("html403", "get_profiles")
    client = make_client(emulator, max_retries=1, sleep=Sleeps())

    assert client.request("get_profiles", params={"page[size]": 1}).ok


def test_401_raises_an_auth_error_without_the_key(emulator: Emulator) -> None:
    key = "pk_not_a_real_key_4242"
    client = KlaviyoClient(private_key=key, base_url=emulator.base_url, sleep=Sleeps())

    with pytest.raises(KlaviyoAuthError) as raised:
        client.request("get_profiles", params={"page[size]": 1})

    message = str(raised.value)
    assert "401" in message and "private_api_key" in message
    assert key not in message
    assert len(requests_for(emulator, "get_profiles", 1)) == 1


def test_403_raises_an_auth_error_naming_the_scope(emulator: Emulator) -> None:
    key = "pk_events_only_7777"
    emulator.add_key(key, {"events:write"})
    client = KlaviyoClient(private_key=key, base_url=emulator.base_url, sleep=Sleeps())

    with pytest.raises(KlaviyoAuthError) as raised:
        client.request("get_profiles", params={"page[size]": 1})

    message = str(raised.value)
    assert "403" in message and "profiles:read" in message
    assert key not in message
    assert len(requests_for(emulator, "get_profiles", 1)) == 1


def test_next_links_to_another_host_are_refused(emulator: Emulator) -> None:
    client = make_client(emulator)

    result = client.request("get_profiles", url="https://evil.example.com/api/profiles")

    assert not result.ok and "another host" in result.describe()
    assert emulator.request_log == []


# -- base URL -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://a.klaviyo.com",
        "https://a.klaviyo.com/",
        "http://127.0.0.1:8080",
        "http://127.3.2.1",
        "http://localhost:9000",
        "http://LOCALHOST",
        "http://[::1]:8080",
    ],
)
def test_base_url_accepted(url: str) -> None:
    assert check_base_url(url) == url.rstrip("/")


@pytest.mark.parametrize(
    "url",
    [
        "http://a.klaviyo.com",
        "http://10.0.0.5:8080",
        "http://[::2]",
        "http://localhost.evil.example.com",
        "http://127.0.0.1.nip.io",
        "ftp://a.klaviyo.com",
        "a.klaviyo.com",
    ],
)
def test_base_url_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="api_base_url"):
        check_base_url(url)


# -- the key stays secret ------------------------------------------------------------------------


def files_under(directory: Path) -> Iterator[Path]:
    return (path for path in directory.rglob("*") if path.is_file())


@pytest.mark.emulator(window_scale=0.01, supported_regions={"US"})
def test_private_key_never_appears_in_output_or_files_even_at_debug(
    emulator: Emulator, tmp_path: Path
) -> None:
    key = "pk_secret_debug_key_31337"
    emulator.add_key(key, emulator.all_scopes)
    emulator.expect_violations(1)  # the +44 number: 400 from the account's region setting
    emulator.add_fault("429", "create_or_update_profile", retry_after=1)
    emulator.add_fault("503", "create_or_update_profile")
    state_dir = tmp_path / "state"
    config = base_config(
        emulator, state_dir, {"customers": {"object": "profile"}}, private_api_key=key
    )
    records = [
        {"id": 1, "email": "a@example.com", "phone_number": "+44 20 7946 0958"},
        {"id": 2, "email": "b@example.com"},
    ]
    lines = singer_lines(
        stream_messages(
            "customers", {"id": INTEGER, "email": STRING, "phone_number": STRING}, records, ["id"]
        )
    )

    run = run_target(config, lines, tmp_path, env={"TARGET_KLAVIYO_LOGLEVEL": "DEBUG"})

    assert run.exit_code == 0, run.stderr
    assert "DEBUG" in run.stderr  # the run really logged at DEBUG
    statuses = [entry.status for entry in requests_for(emulator, "create_or_update_profile")]
    assert 429 in statuses and 400 in statuses and 503 in statuses
    assert run.stream("customers")["rejected"] == 1
    assert key not in run.stderr
    assert key not in run.stdout
    checked = list(files_under(state_dir))
    assert checked
    for path in checked:
        assert key.encode() not in path.read_bytes(), path
    # The key's distinctive middle is absent too (not just the whole string).
    assert "secret_debug_key" not in run.stderr


def test_test_connection_with_a_wrong_key_is_one_clear_line(
    emulator: Emulator, tmp_path: Path
) -> None:
    key = "pk_wrong_key_for_this_account_9999"
    config = base_config(
        emulator, tmp_path / "state", {"customers": {"object": "profile"}}, private_api_key=key
    )

    run = run_target(config, "", tmp_path, args=["--test-connection"], env={"LOGLEVEL": "DEBUG"})

    assert run.exit_code == 1
    errors = [line for line in run.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1, run.stderr
    assert "401" in errors[0] and "private_api_key" in errors[0]
    assert "Traceback" not in run.stderr
    assert key not in run.stderr and key not in run.stdout
    if (tmp_path / "state").exists():
        for path in files_under(tmp_path / "state"):
            assert key.encode() not in path.read_bytes(), path
