"""What a study stores about itself, so that any machine can join it or report on it.

The first process to create a study writes the resolved base experiment (the config
with every `--set` applied, as YAML) and the space file's text into the study's user
attributes. A process that joins compares its own with them and is refused when they
differ; `cnnzoo tune --report` rebuilds the trials' configs from them alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna

from cnnzoo.config.experiment import ExperimentConfig, parse_config
from cnnzoo.errors import CnnzooError
from cnnzoo.tune.space import SearchSpace, parse_space

CONFIG_ATTR = "cnnzoo:base_config"
SPACE_ATTR = "cnnzoo:space_text"


@dataclass(frozen=True)
class StudyRecord:
    """A study's base experiment and search space, as its creator gave them."""

    config_text: str  # the base experiment as YAML, every --set applied
    space_text: str  # the space file as written

    def base(self, study_name: str, overrides: list[str] | tuple[str, ...] = ()) -> (
            ExperimentConfig):
        """The base experiment with `overrides` (a trial's parameters) applied."""
        return parse_config(self.config_text, overrides, source=f"study '{study_name}' config")

    def space(self, study_name: str) -> SearchSpace:
        return parse_space(self.space_text, f"study '{study_name}' space")


def write_record(study: optuna.Study, record: StudyRecord) -> None:
    study.set_user_attr(CONFIG_ATTR, record.config_text)
    study.set_user_attr(SPACE_ATTR, record.space_text)


def read_record(study: optuna.Study) -> StudyRecord | None:
    """The stored record, or None for a study that has none (yet)."""
    attrs = study.user_attrs
    if CONFIG_ATTR not in attrs or SPACE_ATTR not in attrs:
        return None
    return StudyRecord(str(attrs[CONFIG_ATTR]), str(attrs[SPACE_ATTR]))


def require_record(study: optuna.Study, storage: str) -> StudyRecord:
    record = read_record(study)
    if record is None:
        raise CnnzooError(f"study '{study.study_name}' in {storage} was not made by cnnzoo "
                          "tune (it stores no config or space); report on a study that "
                          "cnnzoo tune ran")
    return record
