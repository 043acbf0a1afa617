"""The labeling app in a real headless Chromium (Debian's `chromium`, driven by Playwright).

One journey, as a team would use it: an admin imports prompts and reads the intake report, creates tasks
(demonstrations, uploaded rankings and A/B pairs, and rankings generated from a checkpoint, with progress);
a labeler writes a demonstration, ranks six responses with the mouse and six with the keyboard (Likert
scores and metadata flags included) and makes an A/B comparison; the admin reads the agreement report,
downloads the export, and the exported comparisons train a reward model with `instructrl rm`. A second
journey: an admin starts round 2 on prompts ranked in round 1, mixing two checkpoints, and a labeler ranks it.

Set INSTRUCTRL_SCREENSHOTS=docs/img to save the screenshots used in docs/labeling.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from instructrl.datasets.io import read_records
from instructrl.labeling.models import Assignment, Submission, Task
from labeling.helpers import PASSWORD, add_user, jsonl, login, make_app, ranking_app, scores
from labeling.servers import LiveServer

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = os.environ.get("INSTRUCTRL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = os.environ.get("INSTRUCTRL_SCREENSHOTS")

PROMPTS = [
    ("Write a haiku about autumn leaves.", "u01"),
    ("Explain what a neural network is to a ten-year-old.", "u02"),
    ("Suggest three names for a coffee shop by the sea.", "u03"),
    ("How do I politely decline a meeting invitation?", "u04"),
    ("Summarize the plot of Romeo and Juliet in two sentences.", "u05"),
    ("What are good habits for learning a new language?", "u06"),
    ("Give me a recipe idea that uses chickpeas.", "u07"),
    ("Write a limerick about a cat who loves boxes.", "u08"),
    ("Why is the sky blue?", "u09"),
    ("List the planets of the solar system in order.", "u10"),
]
RESPONSES = {
    PROMPTS[1][0]: [
        "A neural network is a computer program that learns from examples, a bit like how you learn to recognise "
        "dogs after seeing many of them. It has lots of tiny parts that pass numbers to each other.",
        "It is a type of brain made of wires that thinks exactly like a person.",
        "Neural networks are differentiable function approximators trained by stochastic gradient descent.",
        "Imagine a big team of friends passing notes. Each friend adds a little to the note, and with practice the "
        "team gets better at answering questions like 'is this a cat?'.",
        "I don't know.",
        "A neural network is a network of neurons.",
    ],
    PROMPTS[3][0]: [
        "Thank you for the invitation. Unfortunately I can't attend, but please share the notes afterwards.",
        "No.",
        "I'd love to join, but I have a conflict at that time. Could we find another slot?",
        "Just ignore it; they will get the message.",
        "Decline it in your calendar app and add a short, friendly note explaining why.",
        "Meetings are a waste of time, tell them that.",
    ],
}


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} not found: apt-get install chromium (or set INSTRUCTRL_CHROMIUM)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


def shot(page, name: str, height: int = 940) -> None:
    """A screenshot of the top of the page, `height` pixels tall (the sticky top bar stays on top)."""
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        size = page.viewport_size
        page.set_viewport_size({"width": 1280, "height": height})
        page.mouse.wheel(0, -100_000)
        page.wait_for_timeout(200)
        page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"))
        page.set_viewport_size(size)


def log_in(page, base: str, name: str) -> None:
    page.goto(f"{base}/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")


def start_task(page, base: str, kind: str) -> None:
    """Press the kind's Start button on the task list (a POST: only it reserves a task)."""
    page.goto(f"{base}/tasks")
    with page.expect_navigation():
        page.click(f"#start-{kind}")


def rank_order(page) -> list[int]:
    return [int(x) for x in page.locator("#ranking").input_value().split(",")]


def drag(page, item, target, *, below: bool) -> None:
    """Drag `item` by its handle to just above (or below) `target`, with real mouse moves."""
    handle = item.locator(".drag-handle").bounding_box()
    box = target.bounding_box()
    assert handle and box
    page.mouse.move(handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2)
    page.mouse.down()
    y = box["y"] + (box["height"] - 4 if below else 4)
    page.mouse.move(handle["x"] + 5, y, steps=12)
    page.mouse.up()


def fill_scores(page, scores: list[int], flags: dict[int, list[str]]) -> None:
    for item in page.locator(".rank-item").all():
        index = int(item.get_attribute("data-index") or -1)
        item.locator(f"input[name=likert_{index}][value='{scores[index]}']").check()
        if index in flags:
            item.locator("details.flags summary").click()
            for flag in flags[index]:
                item.locator(f"input[name=flags_{index}][value={flag}]").check()


def test_labeling_journey_in_chromium(browser, tmp_path, tiny_model_dir):
    app = make_app(f"sqlite:///{tmp_path / 'labels.db'}", overlap_fraction=1.0, overlap_labelers=2)
    add_user(app, "admin", role="admin")
    add_user(app, "maria")
    add_user(app, "kenji")
    db = app.state.db
    with LiveServer(app) as base:
        context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
        page = context.new_page()
        page.set_default_timeout(15_000)

        # --- admin: prompt intake -----------------------------------------------------------------
        log_in(page, base, "admin")
        page.wait_for_url(f"{base}/admin")
        rows = "prompt,user_id\n" + "".join(f'"{p}",{u}\n' for p, u in PROMPTS)
        rows += f'"{PROMPTS[0][0].upper()}",u11\n"Email me the answer at kim@example.com",u12\n'
        csv_file = tmp_path / "prompts.csv"
        csv_file.write_text(rows)
        page.click("text=Prompts")
        page.set_input_files("input[type=file]", str(csv_file))
        page.click("text=Upload and run intake")
        page.wait_for_url(f"{base}/admin/intakes/*")
        assert page.inner_text("#r-received") == "12"
        assert page.inner_text("#r-kept") == "10"
        assert page.inner_text("#r-dup") == "1" and page.inner_text("#r-pii") == "1"
        assert "kim@example.com" in page.inner_text("main") and "email" in page.inner_text("main")
        shot(page, "intake-report")

        # --- admin: tasks ---------------------------------------------------------------------------
        page.goto(f"{base}/admin/tasks")
        page.fill("#demo-form input[name=limit]", "2")
        page.click("#demo-form button[type=submit]")
        assert "Created 2 tasks" in page.inner_text(".alert.info")
        ranking_file = tmp_path / "rankings.jsonl"
        ranking_file.write_bytes(
            jsonl([{"prompt": p, "responses": r, "model": "sft-v1"} for p, r in RESPONSES.items()])
        )
        page.set_input_files("#rank-upload input[type=file]", str(ranking_file))
        page.fill("#rank-upload input[name=overlap_fraction]", "1")
        page.click("#rank-upload button[type=submit]")
        assert "Created 2 tasks" in page.inner_text(".alert.info")
        ab_file = tmp_path / "ab.jsonl"
        ab_file.write_bytes(
            jsonl(
                [
                    {
                        "prompt": PROMPTS[8][0],
                        "response_a": "Because of Rayleigh scattering: air scatters blue light more.",
                        "response_b": "Because it reflects the ocean.",
                        "model_a": "ppo",
                        "model_b": "sft",
                    }
                ]
            )  # fmt: skip
        )
        page.set_input_files("#ab-upload input[type=file]", str(ab_file))
        page.click("#ab-upload button[type=submit]")
        assert "Created 1 tasks" in page.inner_text(".alert.info")
        # candidate generation from a checkpoint, in the background, with progress on its page
        page.fill("#gen-form input[name=checkpoint]", str(tiny_model_dir))
        page.fill("#gen-form input[name=limit]", "2")
        page.fill("#gen-form input[name=k]", "4")
        page.fill("#gen-form input[name=max_new_tokens]", "6")
        page.click("#gen-form button[type=submit]")
        page.wait_for_url(f"{base}/admin/jobs/*")
        expect(page.locator("#job-status")).to_have_text("done", timeout=120_000)  # polled by the page's JS
        assert page.inner_text("#job-done") == "8" and page.inner_text("#job-tasks") == "2"
        with db.session() as s:
            generated = list(s.scalars(select(Task).where(Task.source.like("generation:%"))))
        assert len(generated) == 2 and all(len(t.responses or []) == 4 for t in generated)
        page.click("text=Log out")

        # --- labeler: a demonstration ---------------------------------------------------------------
        log_in(page, base, "maria")
        page.wait_for_url(f"{base}/tasks")
        page.click("#start-demonstration")
        page.wait_for_url(f"{base}/assignments/*")
        demo_prompt = page.inner_text("#prompt-text")
        page.fill("textarea[name=response]", "Here is my careful, helpful answer.")
        with page.expect_navigation():
            page.click("text=Submit demonstration")
        assert "/assignments/" in page.url  # straight on to the next demonstration

        # --- labeler: ranking with the mouse --------------------------------------------------------
        start_task(page, base, "ranking")
        while page.locator(".rank-item").count() != 6:  # skip the generated K=4 tasks for this part
            _submit_default(page)  # and straight on to the next ranking
        mouse_prompt = page.inner_text("#prompt-text")
        items = page.locator(".rank-item")
        assert rank_order(page) == [0, 1, 2, 3, 4, 5]
        drag(page, items.nth(3), items.nth(0), below=False)  # D to the top
        assert rank_order(page) == [3, 0, 1, 2, 4, 5]
        drag(
            page,
            page.locator(".rank-item[data-index='1']"),
            page.locator(".rank-item[data-index='5']"),
            below=True,
        )
        assert rank_order(page) == [3, 0, 2, 4, 5, 1]
        assert page.locator(".rank-item").first.locator(".rank-no").inner_text() == "1"
        fill_scores(
            page,
            [6, 2, 4, 7, 1, 3],
            {1: ["hallucination", "fails_to_follow_instruction"], 5: ["expresses_opinion"]},
        )
        shot(page, "ranking", height=1500)
        with page.expect_navigation():
            page.click("text=Submit ranking")

        # --- labeler: ranking with the keyboard -----------------------------------------------------
        while page.locator(".rank-item").count() != 6:
            _submit_default(page)
        keyboard_prompt = page.inner_text("#prompt-text")
        assert keyboard_prompt != mouse_prompt
        page.locator(".rank-item").first.focus()
        page.keyboard.press("Alt+ArrowDown")  # A one down
        page.keyboard.press("Alt+ArrowDown")  # and another
        assert rank_order(page) == [1, 2, 0, 3, 4, 5]
        page.keyboard.press("ArrowDown")  # focus moves to D, without moving anything
        page.keyboard.press("ArrowDown")  # ... to E
        page.keyboard.press("Space")  # pick E up
        for _ in range(4):
            page.keyboard.press("ArrowUp")
        page.keyboard.press("Space")  # drop it at the top
        assert rank_order(page) == [4, 1, 2, 0, 3, 5]
        assert "ranked 1 of 6" in page.inner_text("#rank-status") or "rank 1" in page.inner_text(
            "#rank-status"
        )
        fill_scores(page, [5, 1, 6, 3, 7, 2], {3: ["harmful_advice"]})
        with page.expect_navigation():
            page.click("text=Submit ranking")

        # --- labeler: A/B -------------------------------------------------------------------------
        start_task(page, base, "ab")
        left = page.inner_text("#response-a")
        page.click(
            "text=B is better" if "ocean" in left else "text=A is better"
        )  # prefer the Rayleigh answer
        with page.expect_navigation():
            page.click("text=Submit comparison")
        assert page.url.endswith("/tasks?msg=none_left")
        assert "no more tasks" in page.inner_text(".alert.info")

        # --- what the server stored -----------------------------------------------------------------
        with db.session() as s:
            subs = {(sub.assignment.task.prompt.text, sub.kind): sub for sub in s.scalars(select(Submission))}
        assert subs[(demo_prompt, "demonstration")].response == "Here is my careful, helpful answer."
        mouse = subs[(mouse_prompt, "ranking")]
        assert mouse.ranking == [3, 0, 2, 4, 5, 1]
        assert [x["likert"] for x in mouse.labels] == [6, 2, 4, 7, 1, 3]
        assert mouse.labels[1]["flags"] == ["fails_to_follow_instruction", "hallucination"]
        keyboard = subs[(keyboard_prompt, "ranking")]
        assert keyboard.ranking == [4, 1, 2, 0, 3, 5] and keyboard.labels[3]["flags"] == ["harmful_advice"]
        assert subs[(PROMPTS[8][0], "ab")].preferred == "a"

        # a second labeler ranks the same (overlapping) tasks, through the API, for the agreement report
        kenji = login(app, "kenji")
        while (r := kenji.next("ranking")).status_code == 200:
            k = len(r.json()["task"]["responses"])
            order = [3, 0, 2, 5, 4, 1] if k == 6 else list(range(k))
            assert kenji.submit(r.json()["id"], ranking=order, labels=scores(k)).status_code == 201
        page.click("text=Log out")

        # --- admin: quality and export --------------------------------------------------------------
        log_in(page, base, "admin")
        page.goto(f"{base}/admin/quality")
        overall = page.inner_text("#agreement-overall")
        assert overall.endswith("%")
        table = page.inner_text("#agreement-table")
        assert "maria" in table and "kenji" in table
        assert "hallucination" in page.inner_text("#flagged-table")
        shot(page, "quality")
        page.goto(f"{base}/admin/export")
        with page.expect_download() as download_info:
            page.click("#download-export")
        archive = tmp_path / "export.zip"
        download_info.value.save_as(archive)
        context.close()

    out = tmp_path / "export"
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(out)
    manifest = json.loads((out / "manifest.json").read_text())
    with db.session() as s:
        done = s.scalars(select(Assignment).where(Assignment.status == "done")).all()
    assert sum(manifest["files"].values()) == len(done)
    train = out / "train" / "comparisons.jsonl"
    exported = read_records(train, "comparisons")
    assert len(exported) >= 4
    db.dispose()

    # --- `instructrl rm` reads the export unchanged -----------------------------------------------------
    run_dir = tmp_path / "rm"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "instructrl",
            "rm",
            "--model",
            str(tiny_model_dir),
            "--data",
            str(train),
            "--out",
            str(run_dir),
            "--set",
            "batch_size=2",
            "--set",
            "epochs=1",
            "--set",
            "val_fraction=0.25",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert 0.0 <= summary["val_accuracy"] <= 1.0
    # every exported ranking was read (none dropped as too long), all of its pairs trained on or validated
    assert summary["train_prompts"] + summary["val_prompts"] == len(exported)
    assert summary["skipped_too_long"] == 0 and summary["train_pairs"] > 0


def _submit_default(page) -> None:
    """Submit the ranking on screen as it is (scores of 4), to get past tasks this test does not look at."""
    n = page.locator(".rank-item").count()
    fill_scores(page, [4] * n, {})
    with page.expect_navigation():
        page.click("text=Submit ranking")


def test_a_second_round_mixes_two_checkpoints_on_ranked_prompts_and_a_labeler_ranks_it(
    browser, tmp_path, tiny_model_dir
):
    app = ranking_app(f"sqlite:///{tmp_path / 'labels.db'}")  # round 1: a ranking task per prompt
    lab1 = login(app, "lab1")
    while (r := lab1.next("ranking")).status_code == 200:  # round 1 done: every prompt is ranked
        assert lab1.submit(r.json()["id"], ranking=[0, 1, 2, 3], labels=scores(4)).status_code == 201
    db = app.state.db
    with LiveServer(app) as base:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.set_default_timeout(15_000)

        # --- admin: round 2, half of each prompt's candidates from the current policy, half from the last
        log_in(page, base, "admin")
        page.wait_for_url(f"{base}/admin")
        page.goto(f"{base}/admin/tasks")
        assert page.get_attribute("#gen-form input[name=round]", "placeholder") == "next: 2"
        assert page.inner_text("#rounds-table tbody") == "1\t6\t6"
        page.fill("#gen-form input[name=checkpoint]", str(tiny_model_dir))
        page.fill("#gen-form input[name=model_name]", "ppo-2")
        page.fill("#gen-form input[name=checkpoint_2]", str(tiny_model_dir))
        page.fill("#gen-form input[name=model_name_2]", "ppo-1")
        page.fill("#gen-form input[name=limit]", "2")
        page.fill("#gen-form input[name=k]", "4")
        page.fill("#gen-form input[name=max_new_tokens]", "6")
        page.click("#gen-form button[type=submit]")
        page.wait_for_url(f"{base}/admin/jobs/*")
        expect(page.locator("#job-status")).to_have_text("done", timeout=120_000)
        assert page.inner_text("#job-round") == "2" and page.inner_text("#job-tasks") == "2"
        sources = page.locator(".job-checkpoint").all_inner_texts()
        assert [s.split(" as ")[1] for s in sources] == [
            "ppo-2: 2 of each prompt's responses",
            "ppo-1: 2 of each prompt's responses",
        ]
        shot(page, "generation-round-2")
        page.click("text=Log out")

        # --- labeler: ranks a prompt they ranked in round 1, now with the new candidates -----------
        log_in(page, base, "lab1")
        page.wait_for_url(f"{base}/tasks")
        start_task(page, base, "ranking")
        with db.session() as s:
            first = s.scalars(select(Task).where(Task.round == 2).order_by(Task.id)).first()
            assert first is not None
            round1_prompts = set(s.scalars(select(Task.prompt_id).where(Task.round == 1)))
            first_prompt, first_models = first.prompt.text, first.response_models
        assert first.prompt_id in round1_prompts and page.inner_text("#prompt-text") == first_prompt
        assert sorted(first_models or []) == ["ppo-1", "ppo-1", "ppo-2", "ppo-2"]
        assert "ppo-" not in page.inner_text("main")  # labelers never see which model wrote what
        page.locator(".rank-item").first.focus()
        page.keyboard.press("Alt+ArrowDown")
        assert rank_order(page) == [1, 0, 2, 3]
        fill_scores(page, [5, 6, 3, 2], {})
        with page.expect_navigation():
            page.click("text=Submit ranking")
        context.close()

    with db.session() as s:
        sub = s.scalars(select(Submission).order_by(Submission.id.desc())).first()
        assert sub is not None and sub.assignment.task_id == first.id
        assert sub.ranking == [1, 0, 2, 3] and [x["likert"] for x in sub.labels] == [5, 6, 3, 2]
    db.dispose()
