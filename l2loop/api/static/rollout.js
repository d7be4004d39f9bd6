// The dashboard's Rollout section, drawn from GET /v1/rollout: the latest run's stages,
// status, comparison of the candidate with the incumbent and decisions, and the reason the
// last finished run ended. Text goes in as textContent: a reason is an operator's words.
"use strict";

function rolloutElement(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function rolloutTable(header, rows, rowClass) {
  const table = document.createElement("table");
  const head = table.insertRow();
  for (const name of header) head.appendChild(rolloutElement("th", name));
  for (const row of rows) {
    const tr = table.insertRow();
    for (const cell of row) tr.insertCell().textContent = String(cell);
    if (rowClass) tr.className = rowClass(row);
  }
  return table;
}

function rolloutRate(hits, total) {
  return total ? `${(100 * hits / total).toFixed(2)} % (${hits}/${total})` : "-";
}

function armRow(role, arm) {
  return [role, arm.version, arm.events, arm.flagged, rolloutRate(arm.canary_fp, arm.canary_benign),
          rolloutRate(arm.canary_tp, arm.canary_malicious),
          arm.latency_p95_ms === null ? "-" : arm.latency_p95_ms.toFixed(3)];
}

function historyTable(history) {
  return rolloutTable(["stage", "started", "ended", "outcome", "by"],
    history.map(r => [r.stage, r.started_at, r.ended_at, r.outcome, r.by]));
}

function stageRow(run) {
  const list = rolloutElement("ol", undefined, "stages");
  run.stages.forEach((stage, index) => {
    const item = rolloutElement("li", stage === "shadow" ? "shadow" : `${stage} %`);
    if (index < run.stage_index) item.className = "done";
    if (index === run.stage_index) {
      item.className = "current";
      item.setAttribute("aria-current", "step");
    }
    list.appendChild(item);
  });
  return list;
}

function statusLine(run) {
  const line = rolloutElement("p");
  line.appendChild(rolloutElement("span", run.status, `status-${run.status}`));
  const stage = run.stages[run.stage_index];
  if (run.status === "running" || run.status === "paused") {
    const held = Math.max(0, (Date.now() - Date.parse(run.stage_started_at)) / 1000);
    line.append(` at stage ${stage}, held ${held.toFixed(0)} s`);
  } else if (run.status === "completed") {
    line.append(`: ${run.candidate.version} is the model in service`);
  } else {
    line.append(` at stage ${stage}: ${run.reason}; ${run.incumbent.version} serves every event`);
  }
  if (run.candidate_share !== null) {
    line.append(`; candidate made ${(100 * run.candidate_share).toFixed(2)} % of acting verdicts`);
  }
  return line;
}

function comparisonPart(comparison, waits) {
  const part = rolloutElement("div", undefined, "comparison");
  if (!comparison) {
    part.appendChild(rolloutElement("p", "No comparison at this stage yet.", "note"));
    return part;
  }
  part.appendChild(rolloutElement("h3",
    `Candidate vs incumbent at stage ${comparison.stage}, held ${comparison.held_s.toFixed(0)} s` +
    ` (${comparison.at})`));
  part.appendChild(rolloutTable(
    ["arm", "model", "events", "flagged", "canary FP rate", "recall", "latency p95 ms"],
    [armRow("candidate", comparison.candidate), armRow("incumbent", comparison.incumbent)]));
  part.appendChild(rolloutTable(["check", "outcome", "detail"],
    comparison.checks.map(c => [c.name, c.outcome, c.detail]), row => `outcome-${row[1]}`));
  if (waits.length) {
    part.appendChild(rolloutElement("h3", "Waiting for"));
    const list = rolloutElement("ul", undefined, "waiting");
    for (const wait of waits) list.appendChild(rolloutElement("li", wait));
    part.appendChild(list);
  }
  return part;
}

function renderRollout(reply) {
  const box = document.getElementById("rollout");
  const run = reply.current;
  if (!run) {
    box.appendChild(rolloutElement("p", "No rollout has been started.", "note"));
    box.dataset.status = "none";
    return;
  }
  box.appendChild(rolloutElement("p",
    `Run ${run.run_id}: candidate ${run.candidate.version} against incumbent ` +
    `${run.incumbent.version}, split by ${run.hash_by}.`));
  box.appendChild(stageRow(run));
  box.appendChild(statusLine(run));
  box.appendChild(comparisonPart(run.last, reply.waiting_for));
  box.appendChild(rolloutElement("h3", "Decisions"));
  box.appendChild(run.history.length ? historyTable(run.history)
                                     : rolloutElement("p", "None yet.", "note"));
  box.dataset.status = run.status;
  box.dataset.stage = run.stages[run.stage_index];
  box.dataset.checks = String(run.last ? run.last.checks.length : 0);
  box.dataset.history = String(run.history.length);
  // The latest finished run, when another run has started since: why it ended.
  const finished = reply.runs[0];
  if (finished && finished.run_id !== run.run_id) {
    const part = rolloutElement("div", undefined, "finished");
    part.appendChild(rolloutElement("h3",
      `Last finished run ${finished.run_id}: ${finished.candidate.version} against ` +
      `${finished.incumbent.version}`));
    part.appendChild(statusLine(finished));
    part.appendChild(historyTable(finished.history));
    box.appendChild(part);
    box.dataset.finished = finished.status;
  }
}
