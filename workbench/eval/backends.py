"""Where `workbench evaluate` generates: a generation backend turns (dataset, intervention) jobs into greedy
completions, yielding each job as soon as it is finished so that the caller can write it (and a later call resume).

- `InProcessBackend`: a plain transformers copy of the loaded model with each intervention baked in
  (`weight_edit.edited`), batched `generate` (the default; see `workbench.eval.generation`).
- `OpenAIBackend`: an OpenAI-compatible server (vLLM) that serves the base model and one LoRA adapter per
  intervention under the intervention's name (`workbench export --adapter --all`, `vllm serve --lora-modules`).

A gated intervention (`workbench.interventions.gate.Gated`) has no weight form: both backends *route* it. The
workbench takes each prompt's gate decision on the loaded model (a forward pass up to the gate's layer), then the
prompts the gate opens for are generated under the inner intervention (in process: the edited copy; on a server: the
inner intervention's adapter) and the others by the base model.

Both produce the same text for the same model: greedy decoding, the chat template as `ChatFormat` renders it, the
same stop tokens (`generation.stop_ids`), special tokens skipped and whitespace stripped.
"""

import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from tqdm.auto import tqdm

from workbench.errors import WorkbenchError
from workbench.eval.generation import plain_generate, stop_ids
from workbench.interventions.catalogue import NamedIntervention
from workbench.interventions.gate import Gated, decide, merge, route
from workbench.models.loader import LoadedModel


@dataclass(frozen=True, eq=False)
class GenerationJob:
    """One (dataset, intervention) pair to generate: every instruction of the dataset under the intervention."""

    dataset: str
    intervention: NamedIntervention
    instructions: tuple[str, ...]


@runtime_checkable
class GenerationBackend(Protocol):
    """Generates greedy completions for (dataset, intervention) jobs."""

    name: str
    """What generated the completions, recorded in each pair's `.meta.json` (not part of its settings)."""

    def generate(self, lm: LoadedModel, jobs: Sequence[GenerationJob], max_new_tokens: int,
                 progress: bool = True) -> Iterator[tuple[GenerationJob, list[str]]]:
        """Each job with its completions (one per instruction, in order) as soon as the job is finished. When it
        fails part-way it raises after the jobs finished so far were yielded."""
        ...


class InProcessBackend:
    """The loaded model itself: a plain transformers copy with each intervention baked into its weights (exact for
    ablations: weight orthogonalization; a block pre-hook for additions), batched greedy `generate`."""

    name = "in-process"

    def __init__(self, batch_size: int = 32):
        if batch_size < 1:
            raise WorkbenchError(f"batch size must be at least 1, got {batch_size}")
        self.batch_size = batch_size

    def generate(self, lm: LoadedModel, jobs: Sequence[GenerationJob], max_new_tokens: int,
                 progress: bool = True) -> Iterator[tuple[GenerationJob, list[str]]]:
        from workbench.interventions.export import plain_hf_model
        from workbench.interventions.weight_edit import edited

        if not jobs:
            return
        plain = plain_hf_model(lm)
        items = list({id(job.intervention): job.intervention for job in jobs}.values())
        for item in items:
            if isinstance(item.intervention, Gated):
                for job in (j for j in jobs if j.intervention is item):
                    yield job, self._routed(lm, plain, item, job, max_new_tokens, progress)
                continue
            with edited(plain, item.intervention):
                for job in (j for j in jobs if j.intervention is item):
                    yield job, plain_generate(plain, lm.chat, job.instructions, max_new_tokens, self.batch_size,
                                              progress=progress, desc=f"{job.dataset} · {item.name}")


    def _routed(self, lm: LoadedModel, plain, item: NamedIntervention, job: GenerationJob, max_new_tokens: int,
                progress: bool) -> list[str]:
        """A gated job: each prompt's gate decision, then the open prompts on the edited copy, the rest on the base."""
        from workbench.interventions.weight_edit import edited

        gated = item.intervention
        open_rows = decide(lm, gated.gate, job.instructions, self.batch_size)
        opened, closed = route(open_rows, job.instructions)
        desc = f"{job.dataset} · {item.name}"
        with edited(plain, gated.inner):
            answers_open = plain_generate(plain, lm.chat, opened, max_new_tokens, self.batch_size,
                                          progress=progress, desc=f"{desc} (open {len(opened)})")
        answers_closed = plain_generate(plain, lm.chat, closed, max_new_tokens, self.batch_size,
                                        progress=progress, desc=f"{desc} (closed {len(closed)})")
        return merge(open_rows, answers_open, answers_closed)


class _Retryable(Exception):
    """A failure worth another attempt (no connection, a timeout, 5xx, 429); its text says what happened."""


class OpenAIBackend:
    """An OpenAI-compatible server (vLLM, SGLang, llama.cpp's server, ...) serving each intervention as a model name.

    Requests go to the *completions* endpoint, `POST {base_url}/v1/completions`, with the prompt text that the
    in-process path tokenizes: our `ChatFormat.format(instruction)`, the model's own chat template rendered by our
    tokenizer, BOS included where the template writes one. The chat endpoint is not used because the server would
    render the messages again with its own template (its tokenizer's, or a `--chat-template` it was given): another
    system turn or a doubled BOS would change the completions without any error. For the same reason every request
    sets `add_special_tokens: false` (the in-process path tokenizes with `add_special_tokens=False`: the template
    already holds its special tokens), `stop_token_ids` (our end-of-turn tokens), `skip_special_tokens: true`,
    temperature 0 (greedy) and `repetition_penalty` 1 / presence and frequency penalties 0 (vLLM otherwise takes
    defaults from the model's `generation_config.json`, e.g. Qwen2.5's repetition penalty 1.05), and
    `max_tokens = max_new_tokens`. The returned text is stripped as `plain_generate` strips it.

    Intervention `baseline` is requested as `served_base` (the name the server gives the base model); every other
    intervention under its own name (a LoRA adapter: `vllm serve BASE --enable-lora --lora-modules NAME=DIR`). A
    response naming another model than the one requested is an error: the server answered for the wrong weights.

    Requests run `concurrency` at a time; a connection error, a timeout (`timeout_s` per request), a 5xx or a 429
    is retried `retries` times with exponential backoff (`backoff_s`, doubling, at most 60 s). A job is yielded as
    soon as all its prompts are answered; the first request that fails for good stops the rest and raises a
    one-line `WorkbenchError`, after the jobs finished so far were yielded (and written by `evaluate`).
    """

    def __init__(self, base_url: str, served_base: str | None = None, api_key: str | None = None,
                 concurrency: int = 8, timeout_s: float = 120.0, retries: int = 3, backoff_s: float = 1.0):
        if not base_url.startswith(("http://", "https://")):
            raise WorkbenchError(f"--base-url must start with http:// or https://, got {base_url!r}")
        if concurrency < 1:
            raise WorkbenchError(f"--concurrency must be at least 1, got {concurrency}")
        if not timeout_s > 0:
            raise WorkbenchError(f"--timeout must be positive seconds, got {timeout_s}")
        if retries < 0:
            raise WorkbenchError(f"--retries must be 0 or more, got {retries}")
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        self.served_base = served_base
        self.api_key = api_key
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.name = f"openai {self.base_url}"

    @classmethod
    def from_env(cls, base_url: str, api_key_env: str | None = None, **options) -> "OpenAIBackend":
        """The backend with its API key read from the environment variable `api_key_env` (None: no key)."""
        api_key = None
        if api_key_env is not None:
            api_key = os.environ.get(api_key_env)
            if not api_key:
                raise WorkbenchError(f"--api-key-env {api_key_env}: that environment variable is not set (export "
                                     f"{api_key_env}=... or leave --api-key-env out for a server without a key)")
        return cls(base_url, api_key=api_key, **options)

    # -- HTTP ---------------------------------------------------------------------------------------------------

    def _client(self):
        import httpx

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=httpx.Timeout(self.timeout_s),
                            limits=httpx.Limits(max_connections=self.concurrency + 1))

    def _attempt(self, client, method: str, path: str, body: dict | None):
        import httpx

        try:
            response = client.request(method, path, json=body)
        except httpx.TimeoutException:
            raise _Retryable(f"no answer within --timeout {self.timeout_s:g} s") from None
        except httpx.TransportError as exc:
            raise _Retryable(f"cannot reach it ({type(exc).__name__}: {exc})") from None
        if response.status_code >= 500 or response.status_code == 429:
            raise _Retryable(f"HTTP {response.status_code}: {_short(response.text)}")
        return response

    def _request(self, client, method: str, path: str, body: dict | None = None):
        """The server's response (any status below 500 but 429), after up to `retries` retries."""
        for attempt in range(self.retries + 1):
            try:
                return self._attempt(client, method, path, body)
            except _Retryable as exc:
                if attempt == self.retries:
                    tries = f"{self.retries + 1} attempts" if self.retries else "1 attempt"
                    raise WorkbenchError(f"OpenAI-compatible server at {self.base_url} failed on {method} {path} "
                                         f"after {tries}: {exc} (start it, e.g. `vllm serve`, or check --base-url)"
                                         ) from None
                time.sleep(min(self.backoff_s * 2**attempt, 60.0))
        raise AssertionError("unreachable")

    def _payload(self, response, what: str) -> dict:
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            raise WorkbenchError(f"server at {self.base_url} answered {what} with something other than a JSON object "
                                 f"(HTTP {response.status_code}): {_short(response.text)}")
        return payload

    # -- served names -------------------------------------------------------------------------------------------

    def served_models(self, client) -> list[dict] | None:
        """`GET /v1/models`: the models the server serves (None where it does not list them)."""
        response = self._request(client, "GET", "/v1/models")
        if response.status_code in (401, 403):
            key = "the API key was refused" if self.api_key else "it wants an API key (give --api-key-env NAME)"
            raise WorkbenchError(f"server at {self.base_url} answered HTTP {response.status_code}: {key}")
        if response.status_code != 200:
            return None
        data = self._payload(response, "GET /v1/models").get("data")
        return [m for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)] if isinstance(data, list) \
            else None

    def model_names(self, client, items: Sequence[NamedIntervention]) -> dict[str, str]:
        """The served model name of each intervention, checked against the server's list where it gives one."""
        listed = self.served_models(client)
        served_base = self.served_base
        wanted = {item.name for item in items}
        if served_base is None and "baseline" in wanted:
            bases = [m["id"] for m in listed or () if not m.get("parent") and m["id"] not in wanted]
            if len(bases) != 1:
                what = f"it serves {', '.join(m['id'] for m in listed)}" if listed else "it does not list its models"
                raise WorkbenchError(f"give --served-base NAME, the server's name for the base model (for "
                                     f"intervention baseline): {what}")
            served_base = bases[0]
            print(f"[evaluate] baseline -> served model {served_base!r} at {self.base_url}")
        names = {item.name: served_base if item.name == "baseline" else item.name for item in items}
        if listed is not None:
            ids = {m["id"] for m in listed}
            missing = [f"{item} (as {name})" if item != name else item for item, name in names.items()
                       if name not in ids]
            if missing:
                raise WorkbenchError(
                    f"the server at {self.base_url} does not serve {', '.join(missing)} (it serves "
                    f"{', '.join(sorted(ids)) or 'nothing'}): serve each as a LoRA adapter (`vllm serve BASE "
                    "--enable-lora --lora-modules NAME=OUT/NAME`, OUT from `workbench export --adapter --all`) or "
                    "leave it out with --interventions")
        return names

    # -- generation ---------------------------------------------------------------------------------------------

    def request_body(self, model: str, prompt: str, max_new_tokens: int, stop: Sequence[int]) -> dict:
        """The completions request for one rendered prompt (see the class docstring for why each field is set)."""
        return {"model": model, "prompt": prompt, "max_tokens": max_new_tokens, "temperature": 0.0, "n": 1,
                "stream": False, "repetition_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0,
                "add_special_tokens": False, "skip_special_tokens": True, "stop_token_ids": list(stop)}

    def complete(self, client, model: str, prompt: str, max_new_tokens: int, stop: Sequence[int]) -> str:
        """One greedy completion of `prompt` by the served `model`, stripped."""
        body = self.request_body(model, prompt, max_new_tokens, stop)
        response = self._request(client, "POST", "/v1/completions", body)
        if response.status_code != 200:
            raise WorkbenchError(f"server at {self.base_url} refused a completion for model {model!r} "
                                 f"(HTTP {response.status_code}): {_short(response.text)}")
        payload = self._payload(response, "POST /v1/completions")
        if payload.get("model") != model:
            raise WorkbenchError(f"server at {self.base_url} answered a request for model {model!r} as model "
                                 f"{payload.get('model')!r}: it does not serve {model!r} under that name (check "
                                 "its --lora-modules / --served-model-name and --served-base)")
        try:
            text = payload["choices"][0]["text"]
        except (KeyError, IndexError, TypeError):
            text = None
        if not isinstance(text, str):
            raise WorkbenchError(f"server at {self.base_url} answered without choices[0].text: {_short(str(payload))}")
        return text.strip()

    def generate(self, lm: LoadedModel, jobs: Sequence[GenerationJob], max_new_tokens: int,
                 progress: bool = True) -> Iterator[tuple[GenerationJob, list[str]]]:
        if not jobs:
            return
        stop = sorted(stop_ids(lm.tokenizer))
        items = list({id(j.intervention): j.intervention for j in jobs}.values())
        served = {}  # the served names each intervention needs: a gated one its inner adapter and the base model
        for item in items:
            if isinstance(item.intervention, Gated):
                for name in ("baseline", item.intervention.inner.label):
                    served.setdefault(name, NamedIntervention(name, item.intervention.inner))
            else:
                served.setdefault(item.name, item)
        routes = {j: decide(lm, job.intervention.intervention.gate, job.instructions) for j, job in enumerate(jobs)
                  if isinstance(job.intervention.intervention, Gated)}  # decided before any request is sent
        with self._client() as client:
            names = self.model_names(client, list(served.values()))
            prompts: dict[str, str] = {}  # each instruction rendered once: every intervention sends the same text
            responses: list[list[str | None]] = [[None] * len(job.instructions) for job in jobs]
            left = [len(job.instructions) for job in jobs]
            pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="openai-backend")
            bar = tqdm(total=sum(left), desc=f"requests to {self.base_url}", unit="prompt", disable=not progress)
            try:
                pending: dict[Future, tuple[int, int]] = {}
                for j, job in enumerate(jobs):  # submitted in order: the first jobs finish first
                    model = names.get(job.intervention.name)
                    for k, instruction in enumerate(job.instructions):
                        if j in routes:  # a gated job: the inner adapter where the gate opens, else the base model
                            inner = job.intervention.intervention.inner.label
                            model = names[inner] if bool(routes[j][k]) else names["baseline"]
                        if instruction not in prompts:
                            prompts[instruction] = lm.chat.format(instruction)
                        future = pool.submit(self.complete, client, model, prompts[instruction], max_new_tokens, stop)
                        pending[future] = (j, k)
                for job in (job for j, job in enumerate(jobs) if left[j] == 0):  # a job without prompts
                    yield job, []
                error: BaseException | None = None
                while pending:
                    finished, _ = wait(pending, return_when=FIRST_EXCEPTION)
                    for future in sorted(finished, key=lambda f: f.cancelled() or f.exception() is not None):
                        j, k = pending.pop(future)
                        if future.cancelled():
                            continue
                        if future.exception() is not None:
                            if error is None:  # stop: drop what is queued, let what is in flight finish
                                error = future.exception()
                                for queued in pending:
                                    queued.cancel()
                            continue
                        responses[j][k] = future.result()
                        left[j] -= 1
                        bar.update(1)
                        if left[j] == 0:
                            yield jobs[j], [str(r) for r in responses[j]]
                if error is not None:
                    raise error
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
                bar.close()


def _short(text: str, limit: int = 200) -> str:
    return " ".join(text.split())[:limit]
