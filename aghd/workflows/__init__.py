"""Workflows defined in YAML (``agh compose``): the file format and the
plan. ``model`` holds the validated ``Workflow`` and its steps (no yaml,
no checks: the store builds on it), ``reader`` turns YAML text into values
that keep their line and column, ``validate`` checks them and builds the
model (``parse`` is text to ``Workflow``), and ``plan`` turns a ``Workflow``
into the ``WorkflowPlan`` that compose returns. All of it is pure: no SQL,
no sockets, no daemon state.
"""

from aghd.workflows.model import Condition as Condition
from aghd.workflows.model import Step as Step
from aghd.workflows.model import Workflow as Workflow
from aghd.workflows.plan import to_plan as to_plan
from aghd.workflows.validate import parse as parse
