"""Acts on the nightly ablation study: scheduled on its summary Asset.

``nightly_ablation`` updates the Asset ``nightly_ablation_summary`` when its study
has been analysed; the event's extra lists the components whose effect changed
since the earlier nights. This DAG runs on every such event and, when something
changed, logs a warning that names the components (a real pipeline would page
someone, open a ticket or block a model release here). Triggered by hand, it
looks at the newest event of the Asset.
"""

from __future__ import annotations

import logging

import pendulum
from airflow.sdk import DAG, Asset, task

#: The same Asset as ``nightly_ablation.SUMMARY`` (an Asset is known by its name).
SUMMARY = Asset(name="nightly_ablation_summary", uri="maggy://nightly_ablation/summary")

log = logging.getLogger(__name__)

with DAG(
    dag_id="ablation_watch",
    description="maggy: warn when a component's effect in the nightly ablation study changed",
    schedule=[SUMMARY],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["maggy", "example", "ablation"],
) as dag:

    @task(inlets=[SUMMARY])
    def check_changes(triggering_asset_events=None, inlet_events=None) -> dict:
        """Warn about the components flagged ``changed`` in the study's summary."""
        events = list((triggering_asset_events or {}).get(SUMMARY, []))
        if not events and inlet_events is not None:
            newest = list(inlet_events[SUMMARY])[-1:]  # a manual run: the newest event
            events = newest
        if not events:
            log.info("no summary of the nightly study yet")
            return {"experiment_id": None, "changed": []}
        extra = dict(events[-1].extra or {})
        changed = list(extra.get("changed") or [])
        if changed:
            log.warning(
                "nightly ablation study %s: the effect of %s changed since the earlier nights",
                extra.get("experiment_id"),
                ", ".join(changed),
            )
        else:
            log.info("nightly ablation study %s: no effect changed", extra.get("experiment_id"))
        return {"experiment_id": extra.get("experiment_id"), "changed": changed}

    check_changes()
