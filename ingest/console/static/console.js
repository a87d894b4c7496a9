// hookyard console: progressive enhancement only; every page works without this file.
"use strict";

function localTimes(root) {
  for (const el of root.querySelectorAll("time[datetime]")) {
    const when = new Date(el.getAttribute("datetime"));
    if (isNaN(when)) continue;
    el.title = el.title || when.toISOString();
    el.textContent = when.toLocaleString();
  }
}

async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch (_) {
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "offscreen";
    document.body.appendChild(area);
    area.select();
    const ok = document.execCommand("copy");
    area.remove();
    return ok;
  }
}

document.addEventListener("click", async (event) => {
  const button = event.target.closest("button.copy");
  if (!button) return;
  const ok = await copyText(button.dataset.copy);
  const label = button.textContent;
  button.textContent = ok ? "copied" : "copy failed";
  setTimeout(() => { button.textContent = label; }, 1500);
});

document.addEventListener("submit", (event) => {
  const message = event.target.dataset.confirm;
  if (message && !window.confirm(message)) event.preventDefault();
});

function liveRows() {
  const body = document.querySelector("tbody[data-live]");
  if (!body) return;
  const url = body.dataset.live;
  let last = body.innerHTML;
  async function refresh() {
    if (document.visibilityState === "visible") {
      try {
        const response = await fetch(url, { credentials: "same-origin", headers: { accept: "text/html" } });
        if (response.ok) {
          const html = await response.text();
          if (html !== last) {
            last = html;
            body.innerHTML = html;
            localTimes(body);
            const empty = document.getElementById("inbox-empty");
            if (empty && body.querySelector("tr[data-id]")) empty.hidden = true;
          }
        }
      } catch (_) { /* offline for a moment: try again next time */ }
    }
    setTimeout(refresh, 2000);
  }
  setTimeout(refresh, 2000);
}

// Workflow forms: show only the fields of the chosen trigger and action types.
function typeSwitches() {
  for (const select of document.querySelectorAll("select[data-switch]")) {
    const group = select.dataset.switch;
    const apply = () => {
      for (const set of document.querySelectorAll(`fieldset[data-group="${group}"]`)) {
        const on = set.dataset.type === select.value;
        set.hidden = !on;
        set.disabled = !on;
      }
    };
    select.addEventListener("change", apply);
    apply();
  }
}

function focusFirstError() {
  const bad = document.querySelector("[aria-invalid=true]");
  if (bad) bad.focus();
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes(document);
  liveRows();
  typeSwitches();
  focusFirstError();
});
