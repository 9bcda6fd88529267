"""The judge registry: name -> a builder taking `JudgeOptions` (`make_judge`). `substring` is the paper's and the
default; see `workbench.eval.judge` for what each judge does."""

from collections.abc import Callable

from workbench.errors import WorkbenchError
from workbench.eval.judge import EndpointJudge, Judge, JudgeOptions, SubstringJudge
from workbench.eval.keywords import KeywordJudge
from workbench.eval.model_judge import load_model_judge
from workbench.registry import Registry


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


JUDGES: Registry[Callable[[JudgeOptions], Judge]] = Registry("judge")
"""Judge name -> builder. `substring` is the paper's and the default."""
for _name, _builder in (("substring", _substring), ("keywords", _keywords), ("model", _model),
                        ("endpoint", _endpoint)):
    JUDGES.register(_name, _builder)


def make_judge(name: str, options: JudgeOptions | None = None) -> Judge:
    """The registered judge `name`, built with `options`."""
    return JUDGES.get(name)(options or JudgeOptions())
