"""The ``llm`` event estimator: an LLM rewrites each row into an event template (METHODS.md section 1, step 1).

Backends: a local transformers causal LM (``model`` = a directory or hub id, greedy decoding, batched) or an
OpenAI-compatible HTTP endpoint (``base_url`` + ``model``; the API key is read from the environment variable
named by ``api_key_env`` and never logged, cached or put in an error message). The few-shot prompt ships in
``prompts/event_estimation.json``. Every answer is parsed, validated (``EventTemplate.validate`` plus: the
template, filled with its names, must give back the row's text) and, if invalid, asked again with the problem
fed back, at most ``max_retries`` times. A row that still fails, or that the endpoint refuses (HTTP 400, 413, 422:
e.g. too long for its context), raises ``EstimationFailed``, a ``NoEventsFound``, so ``estimate_rows`` counts it
under ``on_no_events``. Valid answers are cached on disk as each arrives (the HTTP backend asks one row at a time), so
an interrupted or failed run loses none. Timeouts, dropped or broken-off connections, 429 and 5xx answers are retried
with growing waits (a Retry-After header wins), each retry logged. ``timeout`` bounds each wait for the endpoint (to
connect, and for each further piece of its answer), not a whole request: a server that keeps sending holds a request
longer.

Importing this module imports neither torch nor transformers; the local backend loads them on first use.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from ..configuration import hidden_url
from ..errors import ConfigError
from ..paths import cache_root
from .events import (
    EstimationFailed,
    EstimatorUnavailable,
    EventEstimator,
    EventTemplate,
    NoEventsFound,
    TemplateError,
    parse_name_table,
    placeholders_in,
    surviving_names,
)
from .morphology import plural_forms
from .rows import MESSAGE_BOUNDARY

logger = logging.getLogger(__name__)

DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
DEFAULT_PROMPT_FILE = "event_estimation.json"
# Waits (seconds) before re-sending a chat request that timed out, lost its connection, or got HTTP 429 or a 5xx answer:
# about a minute of waiting in all, besides the 7 attempts themselves.
TRANSIENT_RETRY_DELAYS: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
MAX_RETRY_AFTER = 120.0  # the longest Retry-After wait honoured (seconds)
MIN_REDACTED_KEY = 8  # API keys at least this long are redacted wherever an error message would show them
MAX_ERROR_BODY = 65536  # bytes of an HTTP error answer read for its message
_TRANSIENT_STATUSES = {429, 500, 502, 503, 504}
# answers that refuse one row (too long, unprocessable), not the endpoint: the row counts as failed
_ROW_REFUSED_STATUSES = {400, 413, 422}
_PLACEHOLDER_USE = re.compile(r"\{(e[1-9][0-9]*)\}(s\b)?")
_CODE_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)
# Words the shipped prompt's rule 3 keeps as written: logical words and answer labels. An answer that makes one an
# event ("{e4} or false", completion " {e4}") would train the answer as a random symbol.
NOT_EVENTS = frozenset({"every", "each", "not", "is", "are", "true", "false", "yes", "no"})

Conversation = list[dict[str, str]]


class EndpointError(EstimatorUnavailable):
    """The LLM endpoint cannot be reached, rejects the request, or answers something that is not a chat reply.
    ``status`` is the HTTP status of an error answer, None when there was none; ``transient``: worth asking again
    (a timeout, a dropped connection, 429, 5xx); ``retry_after``: the wait in seconds the server asked for, if any."""

    def __init__(self, message: str, status: int | None = None, transient: bool = False, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.transient = transient or status in _TRANSIENT_STATUSES
        self.retry_after = retry_after


# --------------------------------------------------------------------------------------------------------------
# Few-shot prompt, answers and their validation


@dataclass(frozen=True)
class FewShotPrompt:
    """Instructions and worked examples (rows with their answers); ``version`` is a hash of the file's text."""

    system: str
    examples: list[dict[str, Any]]
    version: str

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> FewShotPrompt:
        """The shipped prompt, or a JSON file of the same shape: {"system": ..., "examples": [{"prompt",
        "completion", "answer": {"prompt_template", "completion_template", "events"}}, ...]}."""
        if path is None:
            text = (resources.files(__package__) / "prompts" / DEFAULT_PROMPT_FILE).read_text(encoding="utf-8")
        else:
            file = Path(path).expanduser()
            if not file.is_file():
                raise ConfigError(f"The llm estimator's prompt_file {str(path)!r} does not exist.")
            text = file.read_text(encoding="utf-8")
        where = "shipped prompt file" if path is None else f"prompt_file {str(path)!r}"
        try:
            content = json.loads(text)
            system, examples = content["system"], content["examples"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ConfigError(
                f"The llm estimator's {where} must be a JSON object with 'system' and 'examples' ({error})."
            ) from error
        if not isinstance(system, str) or not isinstance(examples, list):
            raise ConfigError(f"In the llm estimator's {where}, 'system' must be a string and 'examples' a list.")
        for number, example in enumerate(examples):
            if not (isinstance(example, dict) and isinstance(example.get("prompt"), str) and "completion" in example
                    and isinstance(example.get("answer"), dict)):
                raise ConfigError(
                    f"Example {number} of the llm estimator's {where} must be an object with 'prompt' (a string), "
                    "'completion' (a string or null) and 'answer' (an object with prompt_template, completion_template "
                    f"and events); it is {json.dumps(example)[:200]}."
                )
        return cls(system, examples, hashlib.sha256(text.encode()).hexdigest()[:16])

    def messages(self, prompt: str, completion: str | None) -> Conversation:
        """The chat that asks for the template of one row."""
        messages = [{"role": "system", "content": self.system}]
        for example in self.examples:
            messages.append({"role": "user", "content": row_message(example["prompt"], example["completion"])})
            messages.append({"role": "assistant", "content": json.dumps(example["answer"], ensure_ascii=False)})
        messages.append({"role": "user", "content": row_message(prompt, completion)})
        return messages


def row_message(prompt: str, completion: str | None) -> str:
    """A row as the LLM sees it: a JSON object with its prompt and completion."""
    return json.dumps({"prompt": prompt, "completion": completion}, ensure_ascii=False)


def parse_template_reply(text: str) -> dict[str, Any]:
    """The first JSON object with a "prompt_template" key in an answer, inside a code fence or not, with any
    text around it. ``TemplateError`` if there is none."""
    decoder = json.JSONDecoder()
    for candidate in [*_CODE_FENCE.findall(text), text]:
        for start in (index for index, char in enumerate(candidate) if char == "{"):
            try:
                value, _ = decoder.raw_decode(candidate, start)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict) and "prompt_template" in value:
                return value
    raise TemplateError(
        'the answer holds no JSON object {"prompt_template": ..., "completion_template": ..., "events": {...}}'
    )


def _text_pattern(template_text: str, names: Mapping[str, str]) -> re.Pattern[str]:
    """A pattern of the texts that ``template_text`` stands for: each placeholder is its name in any case (``{eN}s`` a
    plural of it); runs of whitespace and the article a/an are free; all other text is the row's own, case included,
    and the separator between messages (a run holding ``MESSAGE_BOUNDARY``) stays as it is."""
    pieces, last = [], 0

    def literal(text: str) -> str:
        tokens = re.split(r"(\s+)", text)
        return "".join(
            rf"[^\S{MESSAGE_BOUNDARY}]+" if token.isspace() and MESSAGE_BOUNDARY not in token  # never across messages
            else "(?i:an?)" if token.lower() in ("a", "an")
            else re.escape(token)
            for token in tokens
            if token
        )

    for match in _PLACEHOLDER_USE.finditer(template_text):
        name = names[match[1]]
        forms = sorted(plural_forms(name) if match[2] else [name], key=len, reverse=True)
        pieces += [literal(template_text[last : match.start()]), "(?i:" + "|".join(map(re.escape, forms)) + ")"]
        last = match.end()
    pieces.append(literal(template_text[last:]))
    return re.compile("".join(pieces))


def used_as_logical_word(name: str, completion: str | None) -> bool:
    """Whether an event's name is one of ``NOT_EVENTS`` used as such: written in lower case ("every", "not"), an
    answer label True / False, or the row's answer itself; not a capitalised name such as an individual called "No"."""
    word = name.strip()
    if word.lower() not in NOT_EVENTS:
        return False
    answer = (completion or "").strip().rstrip(".").lower()
    return word == word.lower() or word.lower() in ("true", "false") or word.lower() == answer


def template_from_answer(answer: Mapping[str, Any], prompt: str, completion: str | None) -> EventTemplate:
    """The validated template of an answer for the row (``prompt``, ``completion``). Raises ``TemplateError``
    (the reason is what the LLM is told on a retry), or ``NoEventsFound`` for a valid answer without events."""
    prompt_template, completion_template = answer.get("prompt_template"), answer.get("completion_template")
    if not isinstance(prompt_template, str):
        raise TemplateError('"prompt_template" must be a string')
    if completion is None:
        completion_template = None
    elif not isinstance(completion_template, str):
        raise TemplateError('the row has a completion, so "completion_template" must be a string')
    try:
        names = parse_name_table(answer.get("events") or {})
    except ValueError as error:
        raise TemplateError(f'"events" must map e1, e2, ... to the original names ({error})') from error
    template = EventTemplate(prompt_template, completion_template, names)
    template.validate()
    not_events = [f"{key} ({name!r})" for key, name in names.items() if used_as_logical_word(name, completion)]
    if not_events:
        raise TemplateError(
            f'"events" makes {", ".join(not_events)} an event: logical words and answer labels (every, each, not, is, '
            "are, true, false, yes, no) are no events; keep them as written"
        )
    unused = [key for key in names if key not in placeholders_in(prompt_template + "\n" + (completion_template or ""))]
    if unused:
        raise TemplateError(f'"events" lists {", ".join(unused)}, which no template uses; list only the placeholders you wrote')
    # An LLM may write a name capitalised ("Cat") where the text has it in lower case: look for each in lower case too.
    lowered = surviving_names(EventTemplate(prompt_template, completion_template, {k: v.lower() for k, v in names.items()}))
    if lowered:
        raise TemplateError(f"original names still in the text: {', '.join(map(repr, lowered))}; replace every use by its placeholder")
    for field, text, original in (("prompt", prompt_template, prompt), ("completion", completion_template, completion)):
        if text is not None and not _text_pattern(text.strip(), names).fullmatch(original.strip()):
            raise TemplateError(
                f"the {field} template, with each placeholder replaced by its name, is not the row's {field}: keep "
                "every other word and sign of the row unchanged"
            )
    if not names:
        raise NoEventsFound(f"The LLM found no event in the row. Prompt: {prompt[:200]!r}")
    return template


def _outcome(answer: Mapping[str, Any], prompt: str, completion: str | None) -> EventTemplate | NoEventsFound:
    """``template_from_answer``, with a valid answer without events returned as its ``NoEventsFound``."""
    try:
        return template_from_answer(answer, prompt, completion)
    except NoEventsFound as error:
        return error


# --------------------------------------------------------------------------------------------------------------
# Backends


class ChatBackend(Protocol):
    """What the estimator needs of a model: a cache identity, an availability check, greedy chat replies."""

    identity: str

    def check_available(self) -> None: ...

    def complete(self, conversations: Sequence[Conversation]) -> list[str]: ...


class OpenAIChatBackend:
    """An OpenAI-compatible server: POST ``{base_url}/chat/completions`` at temperature 0.

    A query string of ``base_url`` (Azure's ``?api-version=...``) is kept on every request; its values are hidden in
    messages and left out of the cache identity, as a key in it would be: a credential changes no answer, so a
    rotated key keeps the cache and no cache file holds it. A user name or password in ``base_url`` is refused: the
    key goes in the environment variable named by ``api_key_env``."""

    def __init__(self, base_url: str, model: str, api_key_env: str, timeout: float, max_tokens: int):
        try:
            parts = urllib.parse.urlsplit(base_url)
        except ValueError:  # an unclosed "[" (of an IPv6 address)
            parts = urllib.parse.urlsplit("")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"The llm estimator's base_url {hidden_url(base_url)!r} is no http:// or https:// URL; give the "
                "endpoint's address, e.g. http://localhost:8000/v1."
            )
        if "@" in parts.netloc:
            raise ConfigError(
                f"The llm estimator's base_url {hidden_url(base_url)!r} holds a user name or password: remove it, and "
                "put the API key in an environment variable named by api_key_env (it is sent as a Bearer token)."
            )
        self.base_url = parts._replace(path=parts.path.rstrip("/"))
        self.model = model
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.max_tokens = max_tokens
        self.shown_base_url = hidden_url(self.base_url.geturl())
        self.identity = f"openai-compatible {self.base_url._replace(query='').geturl()} {model}"

    def _url(self, path: str) -> str:
        """The URL of ``path`` under ``base_url``, before its query string."""
        return self.base_url._replace(path=self.base_url.path + path).geturl()

    def _api_key(self) -> str | None:
        """The API key from the environment, without the whitespace around it (a secret file's final line break);
        ``EstimatorUnavailable`` if a control character is left inside, which no HTTP header may carry."""
        key = os.environ.get(self.api_key_env, "").strip()
        if any(ord(char) < 32 or ord(char) == 127 for char in key):
            raise EstimatorUnavailable(
                f"The API key in the environment variable {self.api_key_env} holds a control character (a line break "
                "inside it?); set it to the key alone."
            )
        return key or None

    def _redact(self, text: str, limit: int | None = None) -> str:
        """``text`` (e.g. an answer that echoes the request) without the API key, then cut to ``limit`` characters. A
        key shorter than ``MIN_REDACTED_KEY`` (a stand-in's) is hidden only after "Bearer ": replacing each of its
        occurrences would garble the message."""
        key = os.environ.get(self.api_key_env, "").strip()
        if len(key) >= MIN_REDACTED_KEY:
            text = text.replace(key, "***")
        elif key:
            text = text.replace(f"Bearer {key}", "Bearer ***")
        return text[:limit]

    def _request(self, path: str, payload: dict[str, Any] | None, timeout: float) -> Any:
        """The decoded JSON answer of a GET (no payload) or POST to ``{base_url}{path}``."""
        url, shown_url = self._url(path), hidden_url(self._url(path))
        headers = {"Accept": "application/json"}
        if key := self._api_key():
            headers["Authorization"] = f"Bearer {key}"
        data = None
        if payload is not None:
            data = json.dumps(payload).encode()
            headers["Content-Type"] = "application/json"
        try:
            request = urllib.request.Request(url, data=data, headers=headers, method="GET" if data is None else "POST")
            with urllib.request.urlopen(request, timeout=timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as error:
            detail = self._redact(error.read(MAX_ERROR_BODY).decode(errors="replace"), 300)
            hint = ""
            if error.code in (401, 403):
                state = "is set" if self._api_key() else "is not set"
                hint = f" The API key is read from the environment variable {self.api_key_env}, which {state}."
            message = f"The LLM endpoint {shown_url} answered HTTP {error.code}: {detail!r}.{hint}"
            raise EndpointError(message, error.code, retry_after=_seconds(error.headers.get("Retry-After"))) from None
        except OSError as error:  # URLError (refused, unknown host), timeouts, resets
            reason = getattr(error, "reason", error)
            if isinstance(reason, TimeoutError):
                raise EndpointError(
                    f"The LLM endpoint {shown_url} sent nothing for {timeout:g} s (the llm estimator's `timeout`; raise it "
                    "for a slow server).",
                    transient=True,
                ) from None
            if isinstance(reason, ConnectionResetError):  # also http.client.RemoteDisconnected: the server went away
                raise EndpointError(
                    f"The LLM endpoint {shown_url} closed the connection without an answer ({self._redact(str(reason))}).",
                    transient=True,
                ) from None
            raise EndpointError(
                f"Cannot reach the LLM endpoint {shown_url}: {self._redact(str(reason))}. Check the llm estimator's base_url "
                "and that the server is running."
            ) from None
        except http.client.InvalidURL as error:
            raise EndpointError(f"The llm estimator's base_url gives the invalid URL {shown_url}: {error}.") from None
        except http.client.HTTPException as error:  # IncompleteRead, BadStatusLine: the answer broke off
            raise EndpointError(
                f"The LLM endpoint {shown_url} broke its answer off ({self._redact(repr(error), 200)}).",
                transient=True,
            ) from None
        except ValueError as error:  # a request urllib cannot send (a header value it refuses, ...)
            raise EndpointError(f"Cannot send the request to the LLM endpoint {shown_url}: {self._redact(str(error))}.") from None
        try:
            return json.loads(body)
        except json.JSONDecodeError:
            snippet = self._redact(body.decode(errors="replace"), 200)
            if snippet.lstrip().startswith("data:"):  # server-sent events
                raise EndpointError(
                    f"The LLM endpoint {shown_url} answered with a stream of server-sent events ({snippet[:80]!r}) where it was "
                    'asked for one JSON answer ("stream": false); the llm estimator reads no streams: use an endpoint '
                    "that serves non-streaming requests."
                ) from None
            raise EndpointError(f"The LLM endpoint {shown_url} answered something that is not JSON: {snippet!r}.") from None

    def check_available(self) -> None:
        """GET ``{base_url}/models`` (within ``timeout``); warns if the model is not among those listed."""
        try:
            listing = self._request("/models", None, timeout=self.timeout)
        except EndpointError as error:
            if error.status == 404:  # reachable; this server just lists no models
                return
            raise
        served = [entry.get("id") for entry in listing.get("data", [])] if isinstance(listing, dict) else []
        if served and self.model not in served:
            logger.warning("The LLM endpoint %s does not list the model %r; it lists: %s", self.shown_base_url, self.model,
                           ", ".join(map(str, served[:20])))

    def complete(self, conversations: Sequence[Conversation]) -> list[str]:
        return [self._chat(conversation) for conversation in conversations]

    def _chat(self, conversation: Conversation) -> str:
        payload = {
            "model": self.model, "messages": conversation, "temperature": 0, "max_tokens": self.max_tokens, "stream": False,
        }
        delays = TRANSIENT_RETRY_DELAYS
        for attempt, delay in enumerate((*delays, None), start=1):
            try:
                reply = self._request("/chat/completions", payload, timeout=self.timeout)
                break
            except EndpointError as error:
                if delay is None or not error.transient:
                    raise
                if error.retry_after is not None:
                    delay = min(max(delay, error.retry_after), MAX_RETRY_AFTER)
                logger.warning("%s Asking again in %g s (retry %d of %d).", error, delay, attempt, len(delays))
                time.sleep(delay)
        try:
            return reply["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise EndpointError(
                f"The LLM endpoint {hidden_url(self._url('/chat/completions'))} answered without choices[0].message.content: "
                f"{self._redact(json.dumps(reply), 200)!r}."
            ) from None


def _seconds(retry_after: str | None) -> float | None:
    """A Retry-After header's wait in seconds (the HTTP-date form is not honoured: None)."""
    try:
        return max(0.0, float(retry_after)) if retry_after is not None else None
    except ValueError:
        return None


class TransformersChatBackend:
    """A local causal LM with a chat template: greedy decoding, left-padded batches, loaded on first use."""

    def __init__(self, model: str, device: str | None, batch_size: int, max_new_tokens: int):
        path = Path(model).expanduser()
        self.model_id = str(path.resolve()) if path.is_dir() else model
        self.device = device
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.identity = f"transformers {self.model_id}"
        self._loaded: tuple[Any, Any] | None = None

    def check_available(self) -> None:
        """The model resolves: an existing directory, or a hub id in the local cache (or downloadable)."""
        if self.model_id.startswith(("/", "./", "../", "~")) and not Path(self.model_id).expanduser().is_dir():
            raise EstimatorUnavailable(f"The llm estimator's model directory {self.model_id!r} does not exist.")
        from transformers import AutoConfig

        try:
            AutoConfig.from_pretrained(self.model_id)
        except (OSError, ValueError) as error:
            raise EstimatorUnavailable(
                f"The llm estimator's model {self.model_id!r} is neither a model directory nor a loadable hub id: "
                f"{error}"
            ) from error

    def _load(self) -> tuple[Any, Any]:
        if self._loaded is None:
            self.check_available()
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(self.model_id, padding_side="left")
            if not tokenizer.chat_template:
                raise EstimatorUnavailable(
                    f"The llm estimator's model {self.model_id!r} has no chat template; use an instruction-tuned model."
                )
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            model = AutoModelForCausalLM.from_pretrained(self.model_id, dtype="auto").to(device).eval()
            self._loaded = (tokenizer, model)
        return self._loaded

    def release(self) -> None:
        """Drop the loaded model (and the CUDA memory it held)."""
        if self._loaded is not None:
            import torch

            self._loaded = None
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def complete(self, conversations: Sequence[Conversation]) -> list[str]:
        import torch

        tokenizer, model = self._load()
        replies = []
        for start in range(0, len(conversations), self.batch_size):
            chunk = conversations[start : start + self.batch_size]
            texts = [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in chunk]
            inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            with torch.inference_mode():
                output = model.generate(
                    **inputs, do_sample=False, max_new_tokens=self.max_new_tokens, pad_token_id=tokenizer.pad_token_id
                )
            replies += tokenizer.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        return replies


# --------------------------------------------------------------------------------------------------------------
# Cache


def default_cache_dir() -> Path:
    """``<cache root>/events``: ``$TRL_CAUSAL_CACHE/events``, else ``~/.cache/trl_causal/events``."""
    return cache_root() / "events"


class AnswerCache:
    """Valid answers as JSON files ``<directory>/<key>.json``; written atomically, so processes may share it."""

    def __init__(self, directory: str | os.PathLike[str]):
        self.directory = Path(directory).expanduser()

    @staticmethod
    def key(backend: str, prompt_version: str, prompt: str, completion: str | None) -> str:
        """Hash of the backend's model identity, the few-shot prompt's version and the row."""
        parts = {"backend": backend, "prompt_version": prompt_version, "prompt": prompt, "completion": completion}
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def get(self, key: str) -> dict[str, Any] | None:
        """The cached answer, or None if there is none (or the file is unreadable)."""
        try:
            answer = json.loads((self.directory / f"{key}.json").read_text(encoding="utf-8"))["answer"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return answer if isinstance(answer, dict) else None

    def put(self, key: str, answer: Mapping[str, Any], backend: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=self.directory, suffix=".tmp", delete=False, encoding="utf-8") as tmp:
            json.dump({"backend": backend, "answer": answer}, tmp, ensure_ascii=False)
        os.replace(tmp.name, self.directory / f"{key}.json")


# --------------------------------------------------------------------------------------------------------------
# The estimator


class LLMEstimator(EventEstimator):
    """Event templates written by an LLM, validated, retried with the problem fed back, cached on disk.

    ``model``: a local directory or hub id (transformers backend), or the model name served at ``base_url``
    (an OpenAI-compatible endpoint such as ``http://localhost:8000/v1``; the API key comes from the
    environment variable named ``api_key_env``). ``max_retries``: extra attempts after an invalid answer.
    ``batch_size`` and ``device``: local backend only; ``timeout`` (seconds): HTTP backend only, the longest wait to
    connect and for each further piece of an answer (per socket read, not per request).
    ``cache_dir``: default ``default_cache_dir()``; ``use_cache=False`` turns the cache off. ``prompt_file``:
    few-shot prompt of your own (shape of ``prompts/event_estimation.json``).
    """

    name = "llm"

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str = DEFAULT_API_KEY_ENV,
        max_retries: int = 2,
        max_new_tokens: int = 1024,
        timeout: float = 60.0,
        batch_size: int = 8,
        device: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        use_cache: bool = True,
        prompt_file: str | os.PathLike[str] | None = None,
    ):
        if not model:
            raise ConfigError("The 'llm' event estimator needs `model`: a local model directory, a hub id, or the "
                              "model name served at base_url.")
        if max_retries < 0:
            raise ConfigError(f"The llm estimator's max_retries is {max_retries}; use 0 or more.")
        if batch_size < 1:
            raise ConfigError(f"The llm estimator's batch_size is {batch_size}; use 1 or more.")
        self.max_retries = max_retries
        self.backend: ChatBackend = (
            OpenAIChatBackend(base_url, model, api_key_env, timeout, max_new_tokens)
            if base_url
            else TransformersChatBackend(model, device, batch_size, max_new_tokens)
        )
        # rows estimate_rows hands over at once: the local backend answers them together; the HTTP one asks row by
        # row anyway, so one at a time caches each answer as it comes and an error names its row
        self.batch_size = batch_size if isinstance(self.backend, TransformersChatBackend) else 1
        self.few_shot = FewShotPrompt.load(prompt_file)
        self.cache = AnswerCache(cache_dir or default_cache_dir()) if use_cache else None

    def check_available(self) -> None:
        """Fail now, with the URL or path in the message, if the model cannot be used (call before training)."""
        self.backend.check_available()

    def release(self) -> None:
        """Free the local model (estimation after this loads it again)."""
        if isinstance(self.backend, TransformersChatBackend):
            self.backend.release()

    def estimate(
        self, prompt: str, completion: str | None = None, *, row: Mapping[str, Any] | None = None
    ) -> EventTemplate:
        [outcome] = self.estimate_batch([prompt], [completion])
        if isinstance(outcome, NoEventsFound):
            raise outcome
        return outcome

    def estimate_many(self, items):
        """``estimate_batch`` of the items' prompts and completions: ``estimate_rows`` hands over ``batch_size`` rows
        at a time, which the local backend answers together."""
        return self.estimate_batch([prompt for prompt, _, _ in items], [completion for _, completion, _ in items])

    def estimate_batch(
        self, prompts: Sequence[str], completions: Sequence[str | None] | None = None
    ) -> list[EventTemplate | NoEventsFound]:
        """Per row, its template or the ``NoEventsFound`` it fails with (``EstimationFailed`` when no
        valid answer came within the retries). The rows still to answer go to the model together each round."""
        completions = list(completions) if completions is not None else [None] * len(prompts)
        keys = [self.cache_key(prompt, completion) for prompt, completion in zip(prompts, completions)]
        outcomes: list[EventTemplate | NoEventsFound | None] = [None] * len(prompts)
        pending = []
        for index, key in enumerate(keys):
            cached = self.cache.get(key) if self.cache is not None else None
            if cached is not None:
                try:
                    outcomes[index] = _outcome(cached, prompts[index], completions[index])
                    continue
                except TemplateError:  # an entry that no longer validates is asked again
                    pass
            pending.append(index)
        chats = {index: self.few_shot.messages(prompts[index], completions[index]) for index in pending}
        problems: dict[int, tuple[str, str]] = {}  # row -> (last problem, last answer)
        for _ in range(1 + self.max_retries):
            if not pending:
                break
            try:
                replies = self.backend.complete([chats[index] for index in pending])
            except EndpointError as error:
                if error.status not in _ROW_REFUSED_STATUSES or len(pending) > 1:
                    raise
                [index] = pending  # the endpoint refuses this row (e.g. too long for its context): the row fails
                outcomes[index] = EstimationFailed(f"{error} Prompt: {prompts[index][:200]!r}")
                logger.warning("%s", outcomes[index])
                pending = []
                break
            retry = []
            for index, reply in zip(pending, replies):
                try:
                    answer = parse_template_reply(reply)
                    outcomes[index] = _outcome(answer, prompts[index], completions[index])
                except TemplateError as error:
                    problems[index] = (str(error), reply)
                    chats[index] = self.few_shot.messages(prompts[index], completions[index]) + [
                        {"role": "assistant", "content": reply},
                        {"role": "user", "content": f"That answer is invalid: {error}.\nAnswer again with the "
                                                    "corrected JSON object only."},
                    ]
                    retry.append(index)
                    continue
                if self.cache is not None:
                    self.cache.put(keys[index], answer, self.backend.identity)
            pending = retry
        for index in pending:
            attempts = 1 + self.max_retries
            problem, reply = problems[index]
            outcomes[index] = EstimationFailed(
                f"The LLM gave no valid event template in {attempts} attempt{'s' * (attempts > 1)}; last problem: "
                f"{problem}. Prompt: {prompts[index][:200]!r}. Last answer: {reply[:200]!r}"
            )
            logger.warning("%s", outcomes[index])
        return outcomes

    def cache_key(self, prompt: str, completion: str | None) -> str:
        """The cache key of a row for this backend and few-shot prompt."""
        return AnswerCache.key(self.backend.identity, self.few_shot.version, prompt, completion)
