// Small behaviours shared by every page (no inline scripts: the CSP forbids them).
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // A form marked data-once submits once: a double click sends one request (the server is idempotent anyway).
  for (const form of document.querySelectorAll("form[data-once]")) {
    form.addEventListener("submit", () => {
      for (const b of form.querySelectorAll("button[type=submit]")) b.disabled = true;
    });
  }
  // Bars and meters take their width from data attributes.
  for (const el of document.querySelectorAll(".meter .fill[data-value]")) {
    el.style.width = `${Math.round(parseFloat(el.dataset.value) * 100)}%`;
  }
  const job = document.getElementById("job");
  if (job) pollJob(job);
});

function pollJob(card) {
  const bar = document.getElementById("job-bar");
  const show = (j) => {
    const pct = j.total ? (100 * j.done) / j.total : 0;
    bar.style.width = `${pct}%`;
    document.getElementById("job-done").textContent = j.done;
    document.getElementById("job-total").textContent = j.total;
    const status = document.getElementById("job-status");
    status.textContent = j.status;
    status.className = `pill ${j.status}`;
    document.getElementById("job-tasks").textContent = j.tasks_created;
    const err = document.getElementById("job-error");
    err.textContent = j.error || "";
    err.classList.toggle("hidden", !j.error);
    return j.status === "queued" || j.status === "running";
  };
  show({ done: +bar.dataset.done, total: +bar.dataset.total, status: card.dataset.status,
         tasks_created: document.getElementById("job-tasks").textContent, error: document.getElementById("job-error").textContent });
  const tick = async () => {
    const r = await fetch(`/api/v1/admin/jobs/${card.dataset.jobId}`, { credentials: "same-origin" });
    if (r.ok && show(await r.json())) setTimeout(tick, 1000);
  };
  if (card.dataset.status === "queued" || card.dataset.status === "running") setTimeout(tick, 500);
}
