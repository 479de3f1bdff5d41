"""The "Engines" tab: every engine's state, license and exactly what it still needs, and the Install
button that makes a heavy engine's own environment (a task: progress, log, cancel)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gradio as gr

from studio.core import Studio
from studio.errors import StudioError
from studio.ui.common import MISSING_FILE, cancel_task, follow_task, short_needs, ui_owner

COLUMNS = ["engine", "state", "capabilities", "languages", "voices", "license", "device", "what it needs"]
LOG_LINES = 40  # of the install's log shown while it runs


def engine_rows(studio: Studio) -> list[list[str]]:
    return [
        [
            r.display_name,
            r.state,
            ", ".join(r.capabilities),
            ", ".join(r.languages),
            str(r.voices),
            r.license,
            r.device,
            short_needs(r.missing, r.problems),
        ]
        for r in studio.registry.reports()
    ]


def needs_details(studio: Studio) -> str:
    """Per engine that cannot run yet: each way to get what is missing once (a command, a download),
    with the files it brings as a list under it; and what is wrong with files placed for an engine."""
    sections = []
    for report in studio.registry.reports():
        if not report.missing and not report.problems:
            continue
        lines = [f"**{report.display_name}**", *(f"- problem: {problem}" for problem in report.problems)]
        by_hint: dict[str, list[str]] = {}
        for line in report.missing:
            if match := MISSING_FILE.match(line):
                by_hint.setdefault(match["hint"] or "place", []).append(match["path"])
            else:
                lines.append(f"- {line}")
        for hint, paths in by_hint.items():
            lines.append(f"- {hint}:" if hint != "place" else "- place these:")
            lines.extend(f"    - `{path}`" for path in paths)
        sections.append("\n".join(lines))
    return "\n\n".join(sections) or "Every engine has what it needs."


def environment_lines(studio: Studio) -> str:
    """One line per engine with an environment of its own: its state."""
    lines = [
        f"- **{r.name}**: environment `{r.environment}` is {r.environment_state}"
        for r in studio.registry.reports()
        if r.environment
    ]
    return "\n".join(lines) or "No engine here needs an environment of its own."


def cluster_lines(studio: Studio) -> str:
    """The Ray cluster's nodes (STUDIO_RAY_ADDRESS): what each offers, hosts and has made."""
    if not studio.cluster:
        return ""
    lines = [
        f"### Cluster\nConnected to the Ray cluster at `{studio.cluster.address}`; the engines "
        f"{', '.join(studio.settings.ray_engines)} make their speech on its nodes"
        + (", and voice fits run there too" if "kokoro" in studio.settings.ray_engines else "")
        + ".\n",
        "| node | state | resources | hosting now | sentences made | voice fits |",
        "|---|---|---|---|---|---|",
    ]
    for node in studio.cluster.nodes():
        offers = ", ".join(f"{name} {amount:g}" for name, amount in sorted(node.resources.items()))
        state = "alive" if node.alive else "lost"
        hosted = ", ".join(node.engines) or "-"
        lines.append(
            f"| `{node.id[:12]}` ({node.address}) | {state} | {offers} | {hosted} | {node.sentences} "
            f"| {node.jobs} |"
        )
    return "\n".join(lines)


class InstallHandlers:
    """The Install and Cancel buttons: submit the "engine_install" task and follow it."""

    def __init__(self, studio: Studio) -> None:
        self.studio = studio

    def install(self, engine: str, request: gr.Request) -> list[Any]:
        if not engine:
            raise gr.Error("Pick an engine first.")
        try:
            task = self.studio.environments.submit(engine, ui_owner(request))
        except StudioError as error:
            raise gr.Error(error.message) from None
        return [task.task_id, "Queued…"]

    def follow(self, task_id: str) -> Iterator[list[Any]]:
        """Progress and the log's last lines until the install ends; then the tables again."""
        for line, done in follow_task(self.studio, task_id):
            log = "\n".join(self.studio.store.read_log(task_id).splitlines()[-LOG_LINES:])
            if done is None:
                yield [line, log, gr.update(), gr.update(), gr.update()]
                continue
            result = done.result
            still = "; ".join(result.get("still_missing", [])) or "nothing: it can run"
            summary = f"**installed**: environment `{result['environment']}` is {result['state']}. Still needed: {still}"
            yield [
                summary,
                log,
                engine_rows(self.studio),
                environment_lines(self.studio),
                needs_details(self.studio),
            ]

    def cancel(self, task_id: str) -> str:
        return cancel_task(self.studio, task_id)


def build_engines_tab(studio: Studio) -> None:
    gr.Markdown(
        "Embedded engines run on any CPU. Heavy engines light up when their weights are placed under "
        f"`{studio.settings.weights_dir}/` (see `weights/README.md`) and, for those with pins of their "
        "own, their environment is installed below."
    )
    table = gr.Dataframe(
        engine_rows(studio),
        headers=COLUMNS,
        interactive=False,
        wrap=True,
        column_widths=["14%", "8%", "11%", "13%", "6%", "13%", "6%", "29%"],
        elem_id="engines-table",
    )
    with gr.Accordion("What each engine needs, step by step", open=False):
        needs = gr.Markdown(needs_details(studio), elem_id="engines-needs")
    nodes = gr.Markdown(cluster_lines(studio), elem_id="cluster-nodes", visible=studio.cluster is not None)
    refresh = gr.Button("Refresh")
    gr.Markdown(
        "### Engine environments\nA heavy engine runs in a Python environment of its own, made from the "
        "package registries with its upstream pins (once; several GB for a torch build). Same as "
        "`python -m studio.engines install <engine>`."
    )
    environments = gr.Markdown(environment_lines(studio), elem_id="environments")
    handlers = InstallHandlers(studio)
    with gr.Row():
        choice = gr.Dropdown(studio.environments.engines(), label="Engine", elem_id="install-engine", scale=3)
        install = gr.Button("Install environment", variant="primary", elem_id="install-button", scale=1)
        cancel = gr.Button("Cancel", elem_id="install-cancel", scale=1)
    status = gr.Markdown(elem_id="install-status")
    log = gr.Textbox(label="Install log", lines=10, max_lines=10, autoscroll=True, elem_id="install-log")
    task_id = gr.State("")

    refresh.click(
        lambda: (
            engine_rows(studio),
            environment_lines(studio),
            needs_details(studio),
            cluster_lines(studio),
        ),
        None,
        [table, environments, needs, nodes],
    )
    install.click(handlers.install, [choice], [task_id, status]).then(
        handlers.follow, [task_id], [status, log, table, environments, needs]
    )
    cancel.click(handlers.cancel, [task_id], [status])
