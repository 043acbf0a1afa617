// Ranking by mouse (drag a card) and by keyboard (Alt+Up/Down, or Space to pick up, arrows, Space to drop).
// The order is kept in the hidden input #ranking as response indices, best first.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const list = document.getElementById("rank-list");
  const hidden = document.getElementById("ranking");
  const status = document.getElementById("rank-status");
  if (!list || !hidden) return;
  const items = () => Array.from(list.querySelectorAll(".rank-item"));
  const letter = (el) => "ABCDEFGHI"[+el.dataset.index];

  // Restore a saved order (the page is shown again after a validation error).
  const saved = hidden.value.split(",").filter((x) => x !== "").map(Number);
  if (saved.length === items().length) {
    for (const idx of saved) list.appendChild(list.querySelector(`.rank-item[data-index="${idx}"]`));
  }

  function sync(moved) {
    items().forEach((el, pos) => { el.querySelector(".rank-no").textContent = pos + 1; });
    hidden.value = items().map((el) => el.dataset.index).join(",");
    if (moved) status.textContent = `Response ${letter(moved)} is now ranked ${items().indexOf(moved) + 1} of ${items().length}.`;
  }

  let moving = false; // moving a focused node in the DOM blurs it: that is not the user leaving the list
  function move(el, delta) {
    const all = items();
    const to = all.indexOf(el) + delta;
    if (to < 0 || to >= all.length) return;
    moving = true;
    if (delta < 0) list.insertBefore(el, all[to]);
    else list.insertBefore(el, all[to].nextSibling);
    el.focus();
    moving = false;
    sync(el);
  }

  // --- keyboard ---
  let grabbed = null;
  list.addEventListener("keydown", (e) => {
    const el = e.target.closest(".rank-item");
    if (!el || e.target !== el) return; // typing in a field inside the card is left alone
    const all = items();
    const i = all.indexOf(el);
    if ((e.key === " " || e.key === "Enter") && !e.altKey) {
      e.preventDefault();
      if (grabbed === el) { el.classList.remove("grabbed"); grabbed = null; status.textContent = `Dropped response ${letter(el)} at rank ${i + 1}.`; }
      else { if (grabbed) grabbed.classList.remove("grabbed"); grabbed = el; el.classList.add("grabbed"); status.textContent = `Picked up response ${letter(el)}. Use the arrow keys, then Space to drop.`; }
    } else if (e.key === "ArrowUp" || e.key === "ArrowDown") {
      e.preventDefault();
      const delta = e.key === "ArrowUp" ? -1 : 1;
      if (e.altKey || grabbed === el) move(el, delta);
      else if (all[i + delta]) all[i + delta].focus();
    } else if (e.key === "Escape" && grabbed) {
      grabbed.classList.remove("grabbed"); grabbed = null;
    }
  });
  list.addEventListener("focusout", (e) => {
    const el = e.target.closest(".rank-item");
    if (!moving && el && el === grabbed && !list.contains(e.relatedTarget)) { el.classList.remove("grabbed"); grabbed = null; }
  });

  // --- mouse / touch: pointer events on the handle, or anywhere on the card except its controls ---
  let drag = null;
  list.addEventListener("pointerdown", (e) => {
    const el = e.target.closest(".rank-item");
    if (!el || e.button !== 0 || e.target.closest("input, label, textarea, summary, details, button, a")) return;
    e.preventDefault();
    drag = { el, startY: e.clientY, moved: false };
    el.setPointerCapture(e.pointerId);
  });
  // Moves and the release are watched on the document: moving the card in the DOM may drop pointer capture.
  document.addEventListener("pointermove", (e) => {
    if (!drag) return;
    const { el } = drag;
    if (!drag.moved && Math.abs(e.clientY - drag.startY) < 4) return;
    if (!drag.moved) { drag.moved = true; el.classList.add("dragging"); }
    // Put the card before the first other card whose middle is below the pointer.
    const others = items().filter((x) => x !== el);
    const before = others.find((x) => { const r = x.getBoundingClientRect(); return e.clientY < r.top + r.height / 2; });
    if (before) { if (before !== el.nextSibling) list.insertBefore(el, before); }
    else if (list.lastElementChild !== el) list.appendChild(el);
    sync(null);
  });
  const end = () => {
    if (!drag) return;
    const { el, moved } = drag;
    el.classList.remove("dragging");
    drag = null;
    if (moved) sync(el);
    el.focus();
  };
  document.addEventListener("pointerup", end);
  document.addEventListener("pointercancel", end);

  sync(null);
});
