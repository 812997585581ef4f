// Proctor audit UI: the approve / deny buttons, and a refresh when the list of
// held calls changes. Everything else is plain server-rendered HTML.
"use strict";

document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-approval]");
  if (!button) return;
  const id = button.dataset.approval;
  const row = document.querySelectorAll(`[data-approval-row="${CSS.escape(id)}"] button`);
  row.forEach((b) => { b.disabled = true; });
  const status = document.getElementById("approval-status");
  try {
    const response = await fetch(`/api/approvals/${encodeURIComponent(id)}`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      credentials: "same-origin",
      body: JSON.stringify({ decision: button.dataset.decision, by: "audit ui" }),
    });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error ? body.error.message : response.statusText);
    if (status) { status.hidden = false; status.textContent = `${body.status}: the held call is released.`; }
    setTimeout(() => window.location.reload(), 400);
  } catch (err) {
    if (status) { status.hidden = false; status.className = "flash error"; status.textContent = String(err.message || err); }
    row.forEach((b) => { b.disabled = false; });
  }
});

const watched = document.querySelector("[data-poll-approvals]");
if (watched) {
  setInterval(async () => {
    try {
      const response = await fetch("/api/approvals", { credentials: "same-origin" });
      if (!response.ok) return;
      const ids = (await response.json()).approvals.map((a) => a.id).sort().join(",");
      if (ids !== watched.dataset.pollApprovals) window.location.reload();
    } catch (err) { /* the proxy restarting: try again on the next tick */ }
  }, 1500);
}
