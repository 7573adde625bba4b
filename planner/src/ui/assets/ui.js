// Ebb's web UI: what HTML alone cannot do. Every page works without it.
"use strict";

// Times: the server writes UTC; show them in the browser's zone, keep UTC on hover.
function localTimes(root) {
  const format = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
  });
  for (const el of root.querySelectorAll("time[datetime]")) {
    const at = new Date(el.getAttribute("datetime"));
    if (!isNaN(at)) el.textContent = format.format(at);
  }
}

// Buttons that need a second thought, and no double submissions.
function guardForms(root) {
  for (const button of root.querySelectorAll("button[data-confirm]")) {
    button.addEventListener("click", (event) => {
      if (!window.confirm(button.dataset.confirm)) event.preventDefault();
    });
  }
  for (const form of root.querySelectorAll("form[method=post]")) {
    form.addEventListener("submit", () => {
      // After the browser has taken the clicked button's value.
      setTimeout(() => form.querySelectorAll("button").forEach((b) => { b.disabled = true; }), 0);
    });
  }
  for (const all of root.querySelectorAll("input[data-select-all]")) {
    all.addEventListener("change", () => {
      const form = all.closest("form");
      form.querySelectorAll(`input[type=checkbox][name="${all.dataset.selectAll}"]`)
        .forEach((box) => { box.checked = all.checked; });
    });
  }
}

// Pages with something running refresh their content in place.
async function refresh(main) {
  const every = Number(main.dataset.refreshMs);
  if (!every) return;
  await new Promise((resolve) => setTimeout(resolve, every));
  if (document.hidden || main.querySelector("form:focus-within")) return refresh(main);
  try {
    const answer = await fetch(window.location.href, { credentials: "same-origin" });
    if (!answer.ok || answer.redirected) return;
    const page = new DOMParser().parseFromString(await answer.text(), "text/html");
    const fresh = page.querySelector("main");
    if (!fresh) return;
    main.innerHTML = fresh.innerHTML;
    if (fresh.dataset.refreshMs) main.dataset.refreshMs = fresh.dataset.refreshMs;
    else delete main.dataset.refreshMs;
    localTimes(main);
    guardForms(main);
    refresh(main);
  } catch (_) {
    // Offline for a moment: try again at the next tick.
    refresh(main);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes(document);
  guardForms(document);
  const main = document.querySelector("main[data-refresh-ms]");
  if (main) refresh(main);
});
