"""The "Engines" tab: every engine's state, license and exactly what it still needs."""

from __future__ import annotations

import gradio as gr

from studio.core import Studio

COLUMNS = ["engine", "state", "capabilities", "languages", "license", "device", "what it needs"]


def engine_rows(studio: Studio) -> list[list[str]]:
    return [
        [
            r.display_name,
            r.state,
            ", ".join(r.capabilities),
            ", ".join(r.languages),
            r.license,
            r.device,
            "; ".join(r.missing) or "nothing",
        ]
        for r in studio.registry.reports()
    ]


def build_engines_tab(studio: Studio) -> None:
    gr.Markdown(
        "Embedded engines run on any CPU. Heavy engines light up when their weights are placed under "
        f"`{studio.settings.weights_dir}/` (see `weights/README.md`)."
    )
    table = gr.Dataframe(
        engine_rows(studio),
        headers=COLUMNS,
        interactive=False,
        wrap=True,
        column_widths=["16%", "9%", "12%", "9%", "14%", "6%", "34%"],
        elem_id="engines-table",
    )
    refresh = gr.Button("Refresh")
    refresh.click(lambda: engine_rows(studio), None, table)
