"""The ``llm`` event estimator: answer parsing and validation, the HTTP backend against a loopback stand-in
server, the on-disk cache, retries, and the local transformers backend on the tiny Llama."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from trl_causal.capt import EstimationFailed, EventTemplate, LLMEstimator, NoEventsFound, TemplateError, estimate_rows
from trl_causal.capt import llm_estimator
from trl_causal.capt.llm_estimator import (
    EndpointError,
    FewShotPrompt,
    default_cache_dir,
    parse_template_reply,
    template_from_answer,
)
from trl_causal.errors import ConfigError
from trl_causal.plugins import PluginManager

API_KEY = "sk-test-secret-4f9c2"
PROMPT = "Every wumpus is a yumpus. Sally is a wumpus.\nTrue or false: Sally is a yumpus."
COMPLETION = "True"
VALID_ANSWER = {
    "prompt_template": "Every {e1} is a {e2}. {e3} is a {e1}.\nTrue or false: {e3} is a {e2}.",
    "completion_template": "True",
    "events": {"e1": "wumpus", "e2": "yumpus", "e3": "Sally"},
}
LEAKY_ANSWER = {  # "Sally" left in the text
    **VALID_ANSWER,
    "prompt_template": "Every {e1} is a {e2}. Sally is a {e1}.\nTrue or false: {e3} is a {e2}.",
}
EXPECTED = EventTemplate(VALID_ANSWER["prompt_template"], "True", VALID_ANSWER["events"])


class StandInEndpoint(ThreadingHTTPServer):
    """PROTOCOL-LEVEL STAND-IN for a remote OpenAI-compatible endpoint (vLLM, llama.cpp, a hosted API): it speaks
    the wire protocol (GET /v1/models, POST /v1/chat/completions) on loopback and replies from a script, so the
    client's requests, headers, retries and error handling are tested without a model or the network."""

    def __init__(self, replies: list[str] | None = None, status: list[int] | None = None):
        super().__init__(("127.0.0.1", 0), StandInHandler)
        self.replies = replies or []  # chat replies, in order; the last one repeats
        self.statuses = status or []  # HTTP statuses to answer chat requests with first (then 200)
        self.chat_requests: list[dict] = []
        self.headers_seen: list[dict] = []
        self.fail_after: int | None = None  # after this many answered chat requests, answer fail_status
        self.fail_status = 401
        self.delays: list[float] = []  # seconds to wait before answering each chat request, in order
        self.retry_after: str | None = None  # a Retry-After header on error answers
        self.drops = 0  # chat requests to answer by closing the connection without a reply
        self.broken: list[str] = []  # replies to send first, in order: "incomplete" (the body cut off), "bad status"
        # (a status line that is no HTTP), "events" (a stream of server-sent events)
        self.echo_prefix = ""  # text before the Authorization header that error answers echo
        self.queries: list[str] = []  # the query string of each request
        self.base_url = f"http://127.0.0.1:{self.server_address[1]}/v1"

    def handle_error(self, request, client_address):
        pass  # a client that timed out has closed the connection this server still answers on


class StandInHandler(BaseHTTPRequestHandler):
    server: StandInEndpoint

    def log_message(self, *args):
        pass

    def _send(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        if status >= 400 and self.server.retry_after is not None:
            self.send_header("Retry-After", self.server.retry_after)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_broken(self, kind: str) -> None:
        self.close_connection = True
        if kind == "bad status":
            self.wfile.write(b"HTTP/1.1 2OO OK\r\n\r\n")
            return
        body = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": "{}"}}]})
        if kind == "events":
            body = f"data: {body}\n\ndata: [DONE]\n\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream" if kind == "events" else "application/json")
        self.send_header("Content-Length", str(len(body) + (100 if kind == "incomplete" else 0)))
        self.end_headers()
        self.wfile.write(body.encode())

    def do_GET(self):
        self.server.headers_seen.append(dict(self.headers))
        path, _, query = self.path.partition("?")
        self.server.queries.append(query)
        if path == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": "stand-in", "object": "model"}]})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self):
        self.server.headers_seen.append(dict(self.headers))
        path, _, query = self.path.partition("?")
        self.server.queries.append(query)
        if path != "/v1/chat/completions":
            return self._send(404, {"error": "not found"})
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.server.delays:
            time.sleep(self.server.delays.pop(0))
        if self.server.drops:
            self.server.drops -= 1
            self.close_connection = True
            return
        if self.server.broken:
            return self._send_broken(self.server.broken.pop(0))
        if self.server.fail_after is not None and len(self.server.chat_requests) >= self.server.fail_after:
            return self._send(self.server.fail_status, {"error": "refused"})
        if self.server.statuses:
            return self._send(self.server.statuses.pop(0), {"error": f"{self.server.echo_prefix}echo {self.headers.get('Authorization')}"})
        self.server.chat_requests.append(request)
        index = min(len(self.server.chat_requests), len(self.server.replies)) - 1
        message = {"role": "assistant", "content": self.server.replies[index]}
        self._send(200, {"choices": [{"index": 0, "message": message}]})


@pytest.fixture
def endpoint(monkeypatch):
    """Start a stand-in endpoint with given replies; the API key is in OPENAI_API_KEY."""
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    servers = []

    def start(replies=None, status=None) -> StandInEndpoint:
        server = StandInEndpoint(replies, status)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fenced(answer: dict) -> str:
    return "Here is the template:\n```json\n" + json.dumps(answer) + "\n```\nHope this helps!"


# --- parsing and validation ------------------------------------------------------------------------------------


def test_parse_template_reply_finds_the_json_in_fences_and_prose():
    assert parse_template_reply(fenced(VALID_ANSWER)) == VALID_ANSWER
    assert parse_template_reply("Sure! " + json.dumps(VALID_ANSWER) + " {trailing} text") == VALID_ANSWER
    assert parse_template_reply('{"note": 1} then ' + json.dumps(VALID_ANSWER)) == VALID_ANSWER
    for garbage in ("", "no json here", '{"prompt_template": "cut off', '{"other": 1}'):
        with pytest.raises(TemplateError, match="no JSON object"):
            parse_template_reply(garbage)


def test_shipped_few_shot_examples_are_valid_answers():
    prompt = FewShotPrompt.load()
    assert len(prompt.examples) >= 3 and len(prompt.version) == 16
    for example in prompt.examples:
        template = template_from_answer(example["answer"], example["prompt"], example["completion"])
        assert template.names
    messages = prompt.messages(PROMPT, None)
    assert [m["role"] for m in messages] == ["system"] + ["user", "assistant"] * len(prompt.examples) + ["user"]
    assert json.loads(messages[-1]["content"]) == {"prompt": PROMPT, "completion": None}


def test_template_from_answer_checks_names_consistency_and_faithfulness():
    assert template_from_answer(VALID_ANSWER, PROMPT, COMPLETION) == EXPECTED
    assert template_from_answer(VALID_ANSWER, PROMPT, None) == EventTemplate(EXPECTED.prompt, None, EXPECTED.names)
    with pytest.raises(TemplateError, match="original names still in the text: 'Sally'"):
        template_from_answer(LEAKY_ANSWER, PROMPT, COMPLETION)
    with pytest.raises(TemplateError, match="which the prompt lacks"):
        extra_event = {**VALID_ANSWER["events"], "e4": "x"}
        template_from_answer({**VALID_ANSWER, "completion_template": "{e4}", "events": extra_event}, PROMPT, COMPLETION)
    with pytest.raises(TemplateError, match='"events" lists e4, which no template uses'):
        template_from_answer({**VALID_ANSWER, "events": {**VALID_ANSWER["events"], "e4": "x"}}, PROMPT, COMPLETION)
    with pytest.raises(TemplateError, match="have no name"):
        template_from_answer({**VALID_ANSWER, "events": {"e1": "wumpus", "e2": "yumpus"}}, PROMPT, COMPLETION)
    rewritten = {**VALID_ANSWER, "prompt_template": "All {e1}s are {e2}s. {e3} is a {e1}.\nIs {e3} a {e2}?"}
    with pytest.raises(TemplateError, match="is not the row's prompt"):
        template_from_answer(rewritten, PROMPT, COMPLETION)
    with pytest.raises(TemplateError, match="completion_template"):
        template_from_answer({**VALID_ANSWER, "completion_template": None}, PROMPT, COMPLETION)
    plural = {"prompt_template": "{e1}s are {e2}.", "events": {"e1": "wumpus", "e2": "bony"}}
    assert template_from_answer(plural, "Wumpuses  are\nbony.", None).names == {"e1": "wumpus", "e2": "bony"}
    article = {"prompt_template": "Max is a {e1}.", "completion_template": None, "events": {"e1": "apple"}}
    assert template_from_answer(article, "Max is an apple.", None).prompt == "Max is a {e1}."
    with pytest.raises(NoEventsFound, match="no event"):
        template_from_answer({"prompt_template": PROMPT, "completion_template": None, "events": {}}, PROMPT, None)


def test_template_from_answer_keeps_the_rows_case_its_message_separators_and_no_name_in_another_case():
    # Only placeholders and a/an may change case; "true" would train another answer than the row's "True".
    lowered = {**VALID_ANSWER, "prompt_template": VALID_ANSWER["prompt_template"].lower(), "completion_template": "true"}
    with pytest.raises(TemplateError, match="is not the row's prompt"):
        template_from_answer(lowered, PROMPT, COMPLETION)
    with pytest.raises(TemplateError, match="is not the row's completion"):
        template_from_answer({**VALID_ANSWER, "completion_template": "true"}, PROMPT, COMPLETION)
    capitalised = {**VALID_ANSWER, "events": {**VALID_ANSWER["events"], "e1": "Wumpus"}}
    assert template_from_answer(capitalised, PROMPT, COMPLETION).names["e1"] == "Wumpus"  # a name's case is free
    leaky = {**capitalised, "prompt_template": "Every {e1} is a {e2}. {e3} is a wumpus.\nTrue or false: {e3} is a {e2}."}
    with pytest.raises(TemplateError, match="original names still in the text: 'wumpus'"):
        template_from_answer(leaky, PROMPT, COMPLETION)
    conversation = "Every wumpus is a yumpus.\n\x1e\nIs Sally a wumpus?"  # two messages, as the capt trainer joins them
    joined = {"prompt_template": "Every {e1} is a {e2}. Is {e3} a {e1}?", "events": VALID_ANSWER["events"]}
    with pytest.raises(TemplateError, match="is not the row's prompt"):
        template_from_answer(joined, conversation, None)
    kept = {**joined, "prompt_template": "Every {e1} is a {e2}.\n\x1e\nIs {e3} a {e1}?"}
    assert template_from_answer(kept, conversation, None).prompt == kept["prompt_template"]


# --- HTTP backend ------------------------------------------------------------------------------------------------


def test_unreachable_endpoint_fails_naming_the_url_without_the_key(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    base_url = f"http://127.0.0.1:{closed_port()}/v1"
    estimator = LLMEstimator(model="any", base_url=base_url, cache_dir=tmp_path, timeout=5)
    with pytest.raises(EndpointError, match=f"Cannot reach the LLM endpoint {base_url}/models") as error:
        estimator.check_available()
    assert API_KEY not in str(error.value)
    with pytest.raises(EndpointError, match=f"{base_url}/chat/completions") as error:
        estimator.estimate(PROMPT, COMPLETION)
    assert API_KEY not in str(error.value)
    assert isinstance(error.value, ConfigError)  # not a row problem: estimate_rows lets it through


def test_endpoint_template_is_cached_and_key_stays_out_of_the_cache(endpoint, tmp_path):
    server = endpoint([fenced(VALID_ANSWER)])
    LLMEstimator(model="stand-in", base_url=server.base_url, cache_dir=tmp_path).check_available()
    assert server.headers_seen[-1]["Authorization"] == f"Bearer {API_KEY}"
    first = LLMEstimator(model="stand-in", base_url=server.base_url, cache_dir=tmp_path)
    assert first.estimate(PROMPT, COMPLETION) == EXPECTED
    again = LLMEstimator(model="stand-in", base_url=server.base_url, cache_dir=tmp_path)
    assert again.estimate(PROMPT, COMPLETION) == EXPECTED
    assert len(server.chat_requests) == 1
    request = server.chat_requests[0]
    assert request["model"] == "stand-in" and request["temperature"] == 0
    assert json.loads(request["messages"][-1]["content"]) == {"prompt": PROMPT, "completion": COMPLETION}
    assert server.headers_seen[-1]["Authorization"] == f"Bearer {API_KEY}"
    [cached] = tmp_path.iterdir()
    assert cached.name == again.cache_key(PROMPT, COMPLETION) + ".json"
    assert API_KEY not in cached.read_text() and json.loads(cached.read_text())["answer"] == VALID_ANSWER
    # another model, prompt-only (inference) rows and a disabled cache each ask again
    LLMEstimator(model="other", base_url=server.base_url, cache_dir=tmp_path).estimate(PROMPT, COMPLETION)
    LLMEstimator(model="stand-in", base_url=server.base_url, cache_dir=tmp_path).estimate(PROMPT)
    LLMEstimator(model="stand-in", base_url=server.base_url, use_cache=False).estimate(PROMPT, COMPLETION)
    assert len(server.chat_requests) == 4 and len(list(tmp_path.iterdir())) == 3


def test_invalid_answer_is_retried_with_the_problem_then_counted(endpoint, tmp_path):
    server = endpoint([json.dumps(LEAKY_ANSWER), "not json at all", json.dumps(LEAKY_ANSWER)])
    estimator = LLMEstimator(model="stand-in", base_url=server.base_url, cache_dir=tmp_path, max_retries=2)
    rows = [{"prompt": PROMPT, "completion": COMPLETION}]
    result = estimate_rows(estimator, rows, on_no_events="keep")
    assert result.no_events == [0] and result.templates == [EventTemplate(PROMPT, COMPLETION, {})]
    assert len(server.chat_requests) == 3
    feedback = server.chat_requests[1]["messages"]
    assert feedback[-2] == {"role": "assistant", "content": json.dumps(LEAKY_ANSWER)}
    assert "original names still in the text: 'Sally'" in feedback[-1]["content"]
    assert "no JSON object" in server.chat_requests[2]["messages"][-1]["content"]
    assert list(tmp_path.iterdir()) == []  # failures are not cached
    with pytest.raises(NoEventsFound, match="on_no_events is 'drop': no row is left"):
        estimate_rows(estimator, rows, on_no_events="drop")
    with pytest.raises(NoEventsFound, match=r"Row 0: The LLM gave no valid event template in 3 attempts; .*'Sally'"):
        estimate_rows(estimator, rows, on_no_events="error")
    with pytest.raises(EstimationFailed):
        LLMEstimator(model="stand-in", base_url=server.base_url, use_cache=False, max_retries=0).estimate(PROMPT)


def test_retry_recovers_and_batch_reports_each_row(endpoint, tmp_path):
    server = endpoint([json.dumps(LEAKY_ANSWER), fenced(VALID_ANSWER)])
    estimator = LLMEstimator(model="stand-in", base_url=server.base_url, cache_dir=tmp_path, max_retries=1)
    assert estimator.estimate_batch([PROMPT], [COMPLETION]) == [EXPECTED]
    assert len(server.chat_requests) == 2


def test_http_errors_are_clear_redacted_and_transient_ones_retried(endpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(llm_estimator, "TRANSIENT_RETRY_DELAYS", (0.0, 0.0))
    server = endpoint([fenced(VALID_ANSWER)], status=[503, 429])
    estimator = LLMEstimator(model="stand-in", base_url=server.base_url, cache_dir=tmp_path)
    assert estimator.estimate(PROMPT, COMPLETION) == EXPECTED
    server.statuses = [401]
    with pytest.raises(EndpointError, match="HTTP 401.*environment variable OPENAI_API_KEY, which is set") as error:
        estimator.estimate("Another row.", None)
    assert API_KEY not in str(error.value) and "Bearer ***" in str(error.value)


def test_an_echoed_key_is_redacted_before_the_message_is_cut_and_a_short_key_garbles_nothing(endpoint, tmp_path, monkeypatch):
    """The answer was cut to 300 characters before the key was redacted, so a key echoed across the cut showed its
    first characters ("Bearer sk-te"); a one-letter key was replaced everywhere ("Conn***ction r***fus***d")."""
    server = endpoint([fenced(VALID_ANSWER)], status=[401])
    server.echo_prefix = "x" * 267  # the key starts 10 characters before the cut: {"error": "xx...x echo Bearer sk-...
    estimator = LLMEstimator(model="stand-in", base_url=server.base_url, use_cache=False)
    with pytest.raises(EndpointError, match=r"HTTP 401: .*echo Bearer \*\*\*") as error:
        estimator.estimate(PROMPT, COMPLETION)
    assert API_KEY[:3] not in str(error.value)
    monkeypatch.setenv("OPENAI_API_KEY", "e")
    server.statuses, server.echo_prefix = [401], ""
    with pytest.raises(EndpointError, match=r"'\{\"error\": \"echo Bearer \*\*\*\"\}'") as error:
        estimator.estimate(PROMPT, COMPLETION)
    assert "environment variable OPENAI_API_KEY, which is set" in str(error.value)
    closed = LLMEstimator(model="stand-in", base_url=f"http://127.0.0.1:{closed_port()}/v1", use_cache=False, timeout=5)
    with pytest.raises(EndpointError, match="Connection refused"):
        closed.check_available()


def test_a_base_url_with_credentials_is_refused_and_its_query_string_is_sent_but_never_shown_or_cached(endpoint, tmp_path):
    """A password in base_url reached an error message ("alice:PASS@127.0.0.1: Name or service not known"); a query
    string went before the path (/v1?api-version=1/chat/completions) and, with a key in it, into every cache file."""
    with pytest.raises(ConfigError, match=r"base_url 'http://<hidden>@127.0.0.1:1/v1' holds a user name or password: .*api_key_env") as error:
        LLMEstimator(model="m", base_url="http://alice:PASS1234@127.0.0.1:1/v1")
    assert "PASS1234" not in str(error.value)
    with pytest.raises(ConfigError, match="base_url 'localhost:8000/v1' is no http:// or https:// URL"):
        LLMEstimator(model="m", base_url="localhost:8000/v1")
    server = endpoint([fenced(VALID_ANSWER)])
    base_url = server.base_url + "?api-version=2024-06-01&api-key=QUERY-SECRET-9"
    estimator = LLMEstimator(model="stand-in", base_url=base_url, cache_dir=tmp_path)
    estimator.check_available()
    assert estimator.estimate(PROMPT, COMPLETION) == EXPECTED
    assert server.queries == ["api-version=2024-06-01&api-key=QUERY-SECRET-9"] * 2  # GET /v1/models, POST .../chat/completions
    [cached] = tmp_path.iterdir()
    assert "QUERY-SECRET-9" not in cached.read_text()
    # the cache is the endpoint's and the model's: another key in the query string reads the same answers
    assert estimator.cache_key(PROMPT, COMPLETION) == LLMEstimator(model="stand-in", base_url=server.base_url).cache_key(PROMPT, COMPLETION)
    server.statuses = [401]
    with pytest.raises(EndpointError, match=r"/v1/chat/completions\?api-version=<hidden>&api-key=<hidden> answered HTTP 401") as error:
        LLMEstimator(model="stand-in", base_url=base_url, use_cache=False).estimate(PROMPT, COMPLETION)
    assert "QUERY-SECRET-9" not in str(error.value)


def named_rows(names: list[str]) -> tuple[list[dict], list[str]]:
    """Rows of PROMPT with another individual in each, and the valid answer of each, in order."""
    rows = [{"prompt": PROMPT.replace("Sally", name), "completion": COMPLETION} for name in names]
    answers = [fenced({**VALID_ANSWER, "events": {**VALID_ANSWER["events"], "e3": name}}) for name in names]
    return rows, answers


def test_answers_are_cached_as_they_arrive_and_an_error_names_its_row(endpoint, tmp_path):
    rows, answers = named_rows(["Sally", "Max", "Rex"])
    server = endpoint(answers)
    server.fail_after = 2  # the third row's request is refused (HTTP 401)
    estimator = LLMEstimator(model="stand-in", base_url=server.base_url, cache_dir=tmp_path, batch_size=8)
    # the endpoint refuses every request from then on: the error blames it, not the row, and says where it stopped
    with pytest.raises(EndpointError, match=r"^The LLM endpoint .*answered HTTP 401.*\(The 'llm' estimator stopped at row 2\.\)$"):
        estimate_rows(estimator, rows)
    assert len(list(tmp_path.iterdir())) == 2  # rows 0 and 1 answered before the failure: not asked again
    server.fail_after = None
    assert [template.names["e3"] for template in estimate_rows(estimator, rows).templates] == ["Sally", "Max", "Rex"]
    assert len(server.chat_requests) == 3


def test_timeouts_are_retried_and_a_row_the_endpoint_refuses_counts_as_failed(endpoint, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(llm_estimator, "TRANSIENT_RETRY_DELAYS", (0.0, 0.0))
    rows, answers = named_rows(["Sally", "Max"])
    server = endpoint(answers)
    server.delays = [2.0]  # the first request outlasts the timeout
    estimator = LLMEstimator(model="stand-in", base_url=server.base_url, cache_dir=tmp_path, timeout=0.5)
    with caplog.at_level("WARNING"):
        assert estimator.estimate(**rows[0]).names["e3"] == "Sally"
    assert "sent nothing for 0.5 s" in caplog.text and "(retry 1 of 2)" in caplog.text
    server.fail_after, server.fail_status = 0, 400  # e.g. a row too long for the server's context
    result = estimate_rows(estimator, rows)  # row 0 is cached; the endpoint refuses row 1
    assert result.failed == [1] and result.no_events == [1] and result.templates[0].names["e3"] == "Sally"
    server.delays, server.fail_after, server.drops = [], None, 1  # a dropped connection is asked again
    with caplog.at_level("WARNING"):
        assert estimator.estimate(**rows[1]).names["e3"] == "Max"
    assert "closed the connection without an answer" in caplog.text
    estimator.cache.directory = tmp_path / "other"
    server.statuses, server.retry_after = [429], "0"
    with caplog.at_level("WARNING"):
        assert estimator.estimate(**rows[1]).names["e3"] == "Max"
    assert "HTTP 429" in caplog.text


def test_an_answer_broken_off_is_retried_and_named_by_its_url(endpoint, tmp_path, monkeypatch, caplog):
    """A body cut short (http.client.IncompleteRead) or a status line that is no HTTP (BadStatusLine) are no OSError:
    they went through as raw tracebacks, never retried."""
    monkeypatch.setattr(llm_estimator, "TRANSIENT_RETRY_DELAYS", (0.0, 0.0))
    server = endpoint([fenced(VALID_ANSWER)])
    server.broken = ["incomplete", "bad status"]
    estimator = LLMEstimator(model="stand-in", base_url=server.base_url, cache_dir=tmp_path)
    with caplog.at_level("WARNING"):
        assert estimator.estimate(PROMPT, COMPLETION) == EXPECTED
    url = f"{server.base_url}/chat/completions"
    assert f"The LLM endpoint {url} broke its answer off (IncompleteRead(" in caplog.text
    assert "broke its answer off (BadStatusLine(" in caplog.text and "(retry 2 of 2)" in caplog.text
    server.broken = ["incomplete"] * 3
    with pytest.raises(EndpointError, match=f"^The LLM endpoint {url} broke its answer off"):
        LLMEstimator(model="stand-in", base_url=server.base_url, use_cache=False).estimate(PROMPT, COMPLETION)


def test_a_stream_of_events_is_named_as_such(endpoint, tmp_path):
    server = endpoint([fenced(VALID_ANSWER)])
    server.broken = ["events"]
    with pytest.raises(EndpointError, match="answered with a stream of server-sent events .*\"stream\": false"):
        LLMEstimator(model="stand-in", base_url=server.base_url, cache_dir=tmp_path).estimate(PROMPT, COMPLETION)
    LLMEstimator(model="stand-in", base_url=server.base_url, cache_dir=tmp_path).estimate(PROMPT, COMPLETION)
    assert server.chat_requests[-1]["stream"] is False


def test_api_key_is_stripped_and_one_no_header_can_carry_fails_without_showing_it(endpoint, tmp_path, monkeypatch):
    """A key read from a secret file ends with a line break: http.client refused the header in a ValueError that
    printed the key."""
    server = endpoint([fenced(VALID_ANSWER)])
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY + "\r\n")
    assert LLMEstimator(model="stand-in", base_url=server.base_url, cache_dir=tmp_path).estimate(PROMPT, COMPLETION) == EXPECTED
    assert server.headers_seen[-1]["Authorization"] == f"Bearer {API_KEY}"
    rows = [{"prompt": PROMPT, "completion": COMPLETION}]
    refusals = {  # a line break inside the key; a character that a header cannot encode
        API_KEY + "\n" + API_KEY: "The API key in the environment variable OPENAI_API_KEY holds a control character",
        API_KEY + "\u2019": f"Cannot send the request to the LLM endpoint {server.base_url}/chat/completions: 'latin-1'",
    }
    for key, message in refusals.items():
        monkeypatch.setenv("OPENAI_API_KEY", key)
        with pytest.raises(ConfigError, match=f"^{re.escape(message)}") as error:
            estimate_rows(LLMEstimator(model="stand-in", base_url=server.base_url, use_cache=False), rows)
        assert API_KEY not in str(error.value)


def test_an_answer_that_makes_an_answer_label_an_event_is_invalid(endpoint, tmp_path):
    """"True" of "True or false:" and of the completion " True" made an event: training would learn a random
    symbol as the answer. The shipped prompt's rule 3 keeps logical words and answer labels as written."""
    prompt = "Every wumpus is fruity. Sally is a wumpus.\nTrue or false: Sally is fruity."
    label_event = {
        "prompt_template": "Every {e1} is {e2}. {e3} is a {e1}.\n{e4} or false: {e3} is {e2}.",
        "completion_template": " {e4}",
        "events": {"e1": "wumpus", "e2": "fruity", "e3": "Sally", "e4": "True"},
    }
    with pytest.raises(TemplateError, match=r"makes e4 \('True'\) an event: logical words and answer labels"):
        template_from_answer(label_event, prompt, " True")
    negation = {"prompt_template": "{e1} is {e2} {e3}.", "completion_template": None, "events": {"e1": "Sally", "e2": "not", "e3": "fruity"}}
    with pytest.raises(TemplateError, match=r"e2 \('not'\)"):
        template_from_answer(negation, "Sally is not fruity.", None)
    named_no = {"prompt_template": "{e1} is a {e2}.", "completion_template": " True", "events": {"e1": "No", "e2": "wumpus"}}
    assert template_from_answer(named_no, "No is a wumpus.", " True").names == {"e1": "No", "e2": "wumpus"}  # a name
    with pytest.raises(TemplateError, match=r"e1 \('No'\)"):  # the answer itself
        template_from_answer({**named_no, "completion_template": " {e1}"}, "No is a wumpus.", " No")
    server = endpoint([json.dumps(label_event)])
    estimator = LLMEstimator(model="stand-in", base_url=server.base_url, cache_dir=tmp_path, max_retries=1)
    assert estimate_rows(estimator, [{"prompt": prompt, "completion": " True"}]).failed == [0]
    assert len(server.chat_requests) == 2 and "'True'" in server.chat_requests[1]["messages"][-1]["content"]


def test_a_training_set_without_any_event_is_an_error(endpoint, tmp_path):
    from trl_causal.capt import VocabularyEstimator

    server = endpoint(["no json here"])
    estimator = LLMEstimator(model="stand-in", base_url=server.base_url, cache_dir=tmp_path, max_retries=0)
    rows = [{"prompt": PROMPT, "completion": COMPLETION}, {"prompt": "Hello.", "completion": "Hi."}]
    assert estimate_rows(estimator, rows).failed == [0, 1]  # inference, evaluation: kept as they are
    with pytest.raises(NoEventsFound, match=r"The 'llm' estimator failed on all 2 rows .*plain SFT"):
        estimate_rows(estimator, rows, require_events=True)
    with pytest.raises(NoEventsFound, match=r"failed on all 2 rows .*'drop': no row is left.*or set on_no_events to 'keep'"):
        estimate_rows(estimator, rows, on_no_events="drop")
    with pytest.raises(NoEventsFound, match=r"failed on all 2 rows .*no row is left\. Check event_estimator and event_estimator_kwargs\.$"):
        estimate_rows(estimator, rows, on_no_events="drop", require_events=True)  # training rows: keep would fail too
    with pytest.raises(NoEventsFound, match=r"None of the 2 rows has an event that the 'vocabulary' estimator"):
        estimate_rows(VocabularyEstimator(terms=["gorgon"]), rows, require_events=True)
    with pytest.raises(ConfigError, match=r"terms is one string, 'wumpus, cat'.*`terms: \[wumpus, cat\]`"):
        VocabularyEstimator(terms="wumpus, cat")


def test_progress_counts_the_rows_once_estimated():
    from trl_causal.capt import VocabularyEstimator

    log = []

    class Logged(VocabularyEstimator):
        def estimate_many(self, items):
            log.append(("estimated", len(items)))
            return super().estimate_many(items)

    rows = [{"prompt": "A cat.", "completion": None}] * 3
    estimate_rows(Logged(terms=["cat"]), rows, progress=lambda n: log.append(("progress", n)))
    assert log == [("estimated", 1), ("progress", 1)] * 3


def test_prompt_file_examples_and_options_are_checked(tmp_path):
    from trl_causal import CAPTConfig

    shipped = json.loads((llm_estimator.resources.files(llm_estimator.__package__) / "prompts" / "event_estimation.json").read_text())
    broken = {**shipped, "examples": [{k: v for k, v in example.items() if k != "completion"} for example in shipped["examples"]]}
    custom = tmp_path / "prompt.json"
    custom.write_text(json.dumps(broken))
    with pytest.raises(ConfigError, match=rf"Example 0 of the llm estimator's prompt_file '{custom}' must be an object with 'prompt'"):
        LLMEstimator(model="m", base_url="http://127.0.0.1:1/v1", prompt_file=custom)
    with pytest.raises(ConfigError, match=r"keys \['api_key', 'model'\] do not fit the 'llm' estimator .*'api_key'.*api_key_env") as error:
        CAPTConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, event_estimator="llm", event_estimator_kwargs={"model": "m", "api_key": API_KEY})
    assert API_KEY not in str(error.value)


# --- local transformers backend --------------------------------------------------------------------------------


def test_missing_local_model_is_a_clear_error(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ConfigError, match=f"model directory '{missing}' does not exist"):
        LLMEstimator(model=str(missing)).check_available()
    with pytest.raises(ConfigError, match="needs `model`"):
        LLMEstimator(model="")
    with pytest.raises(ConfigError, match="max_retries"):
        LLMEstimator(model="x", max_retries=-1)


def test_local_model_garbage_is_reported_not_kept(tiny_model, tmp_path):
    estimator = LLMEstimator(model=str(tiny_model), max_new_tokens=8, max_retries=1, batch_size=2, cache_dir=tmp_path)
    estimator.check_available()
    rows = [{"prompt": PROMPT, "completion": COMPLETION}, {"prompt": "Sally is a cat.", "completion": "Yes"}]
    complete, asked = estimator.backend.complete, []
    estimator.backend.complete = lambda conversations: asked.append(len(conversations)) or complete(conversations)
    result = estimate_rows(estimator, rows, on_no_events="keep")
    assert asked == [2, 2]  # batch_size rows answered together, each round (first try, one retry)
    assert result.no_events == [0, 1] and result.failed == [0, 1]
    assert result.templates == [EventTemplate(row["prompt"], row["completion"], {}) for row in rows]
    assert list(tmp_path.iterdir()) == []
    assert estimator.backend._loaded is not None
    estimator.release()  # training has no use for the model once the rows are estimated
    assert estimator.backend._loaded is None


# --- configuration and registration ----------------------------------------------------------------------------


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TRL_CAUSAL_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "events"
    monkeypatch.delenv("TRL_CAUSAL_CACHE")
    assert default_cache_dir().parts[-3:] == (".cache", "trl_causal", "events")


def test_custom_prompt_file_changes_the_cache_key(tmp_path):
    custom = tmp_path / "prompt.json"
    custom.write_text(json.dumps({"system": "Abstract the events.", "examples": []}))
    shipped = LLMEstimator(model="m", base_url="http://127.0.0.1:1/v1", use_cache=False)
    own = LLMEstimator(model="m", base_url="http://127.0.0.1:1/v1", use_cache=False, prompt_file=custom)
    assert shipped.cache_key(PROMPT, None) != own.cache_key(PROMPT, None)
    with pytest.raises(ConfigError, match="prompt_file"):
        LLMEstimator(model="m", base_url="http://127.0.0.1:1/v1", prompt_file=tmp_path / "missing.json")


def test_llm_estimator_is_registered():
    manager = PluginManager(autoload=False)
    assert manager.get_event_estimator("llm") is LLMEstimator
    assert manager.event_estimators.get("llm").distribution == "trl-causal"
