"""The judge registry: name -> a builder taking `JudgeOptions` (`make_judge`). `substring` is the paper's and the
default; see `workbench.eval.judge` for what each judge does."""

from collections.abc import Callable

from workbench.errors import WorkbenchError
from workbench.eval.judge import EndpointJudge, Judge, JudgeOptions, SubstringJudge
from workbench.eval.keywords import KeywordJudge
from workbench.eval.model_judge import load_model_judge


def _substring(options: JudgeOptions) -> Judge:
    return SubstringJudge()


def _keywords(options: JudgeOptions) -> Judge:
    return KeywordJudge.committed()


def _model(options: JudgeOptions) -> Judge:
    return load_model_judge(options)


def _endpoint(options: JudgeOptions) -> Judge:
    if not options.url:
        raise WorkbenchError("the endpoint judge needs the server's URL: --judge-url http://HOST:PORT/v1")
    return EndpointJudge(options.url, model=options.endpoint_model)


JUDGES: dict[str, Callable[[JudgeOptions], Judge]] = {
    "substring": _substring,
    "keywords": _keywords,
    "model": _model,
    "endpoint": _endpoint,
}
"""Judge name -> builder. `substring` is the paper's and the default."""


def make_judge(name: str, options: JudgeOptions | None = None) -> Judge:
    """The registered judge `name`, built with `options`."""
    if name not in JUDGES:
        raise WorkbenchError(f"unknown judge {name!r}: choose one of {', '.join(JUDGES)}")
    return JUDGES[name](options or JudgeOptions())
