"""Two-stage pipelines: a vision model's output fed to a text model, in one test.

```python
from pytest_vlmbench.pipeline import Stage

def test_caption_then_variants(vlm_pipeline):
    vlm_pipeline.run(Stage("tiny-vlm", "caption_brief"),
                     Stage("gemma3-270m", "caption_variants"), mode="staged")
```

`Stage` names a catalog model, a task (a built-in name, a task file or a `Task`), and
optionally its precision (default: the first of the model's run precisions that the
session's device supports, or --vlm-precisions'), its name in the results (default: the
task's name) and its SLOs. The `vlm_pipeline` fixture (plugin/pipeline.py) runs the
stages; this module is light, so a test module imports it at collection for free.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_vlmbench.tasks import Task

__all__ = ["Stage"]


@dataclass(frozen=True, eq=False)
class Stage:
    """One stage of a pipeline: which catalog model runs which task."""

    model: str
    task: Task | str
    precision: str | None = None
    name: str | None = None
    slo: Mapping[str, float] | None = None

    @property
    def label(self) -> str:
        """The stage's name in the results: `name`, else its task's name."""
        if self.name:
            return self.name
        if isinstance(self.task, str):
            return Path(self.task).stem if self.task.endswith(".toml") else self.task
        return self.task.name
