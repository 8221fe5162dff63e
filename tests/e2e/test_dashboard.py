"""The web dashboard in a real browser: Playwright driving Debian's headless Chromium.

Against `otrt serve` with auth on: the key is entered once; a job submitted
through the form with a mistake shows the API's error next to its field; a
teacher and then an OT distillation are submitted through the form and watched
to the end; the curves and the transport plan are drawn; the student downloads.
Screenshots of the job page go to tests/output/ (the test output).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.utils.graphs import torch_graph
from tests.utils.guards import missing

CHROMIUM = Path("/usr/bin/chromium")
OUTPUT = Path(__file__).resolve().parents[1] / "output"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        message = "Chromium is not installed (apt-get install chromium; .ci/run does it)"
        missing(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        yield browser
        browser.close()


def signed_in_page(browser, url: str, key: str, route: str, **options):
    """A new page at ``url/#route``, past the key prompt (the key typed once)."""
    page = browser.new_page(viewport={"width": 1280, "height": 1400}, **options)
    page.goto(f"{url}/#{route}")
    page.wait_for_selector("#key-dialog[open]")
    page.fill("#key-input", key)
    page.click("#key-form button")
    return page


def submit_form(
    page,
    *,
    mode: str,
    student: str,
    teacher_checkpoint: str | None = None,
    epochs: int = 3,
    kind: str = "",
) -> None:
    page.goto(page.url.split("#")[0] + "#/new")
    page.wait_for_selector("#job-form")
    page.select_option("#mode", mode)
    page.select_option("#student-architecture", student)
    page.select_option("#teacher-architecture", "mlp")
    if teacher_checkpoint is not None:
        page.select_option("#teacher-checkpoint", teacher_checkpoint)
    page.select_option("#dataset", "digits")
    page.fill("#epochs", str(epochs))
    page.fill("#batch-size", "64")
    page.select_option("#kind", kind)  # "": the mode's default
    page.click("#submit")


def wait_until_succeeded(page) -> str:
    page.wait_for_url("**/#/jobs/job_*")
    page.wait_for_selector("#job-header [data-status='succeeded']", timeout=120_000)
    return page.url.rsplit("/", 1)[1]


def test_submit_watch_and_download_in_a_browser(browser, served, tmp_path):
    url, key = served
    OUTPUT.mkdir(exist_ok=True)
    page = signed_in_page(browser, url, key, "/new", accept_downloads=True)
    page.wait_for_selector("#job-form")

    # A distill job without a teacher: the API's problem shows next to the field.
    submit_form(page, mode="distill", student="mlp_small", teacher_checkpoint="")
    error = page.locator("[data-error-for='teacher.checkpoint']")
    error.wait_for()
    page.wait_for_function(
        "document.querySelector(\"[data-error-for='teacher.checkpoint']\").textContent.length > 0"
    )
    assert "file_" in error.text_content() or "job" in error.text_content()

    submit_form(page, mode="supervised", student="mlp")
    teacher = wait_until_succeeded(page)

    # OT, whose transport plan the page draws.
    submit_form(page, mode="distill", student="mlp_small", teacher_checkpoint=teacher, kind="ot")
    student = wait_until_succeeded(page)
    assert student != teacher
    page.wait_for_selector("#plan-card:not([hidden])")
    rows, cols = page.eval_on_selector("#plan", "c => [c.dataset.rows, c.dataset.cols]")
    assert (int(rows), int(cols)) == (256, 64)  # mlp's penultimate x mlp_small's neurons
    for chart in ("#chart-loss", "#chart-accuracy", "#chart-ot"):
        assert int(page.eval_on_selector(chart, "c => c.dataset.points")) >= 3, chart
    assert page.locator("#log div").count() >= 5
    page.wait_for_selector("#report-card:not([hidden])")
    summary = page.text_content("#report-summary")
    assert "test accuracy" in summary and "agreement with the teacher" in summary
    # A healthy student: no collapse line, and no part left out is printed as "null".
    assert page.locator("#report-collapsed").count() == 0
    assert "null" not in page.text_content("#report-card")
    page.screenshot(path=str(OUTPUT / "dashboard-job.png"), full_page=True)

    # The full report opens in its own tab, drawn from report.html alone.
    with page.context.expect_page() as opened:
        page.click("#open-report")
    report_page = opened.value
    report_page.wait_for_load_state()
    assert "distill mlp → mlp_small on digits" in report_page.text_content("h1")
    assert report_page.locator("table.confusion th").count() >= 10  # named classes
    assert report_page.locator("svg[aria-label='reliability diagram'] rect").count() >= 1
    report_page.screenshot(path=str(OUTPUT / "report.png"), full_page=True)
    report_page.close()

    with page.expect_download() as download:
        page.click("[data-artifact='student.safetensors']")
    saved = tmp_path / "student.safetensors"
    download.value.save_as(saved)
    assert saved.stat().st_size > 1000

    # A long job cancelled with the job page's button.
    submit_form(page, mode="supervised", student="mlp", epochs=5000)
    page.wait_for_url("**/#/jobs/job_*")
    page.wait_for_selector("#job-header [data-status='running']", timeout=60_000)
    page.click("#cancel")
    page.wait_for_selector("#job-header [data-status='cancelled']", timeout=60_000)

    page.goto(url + "/#/")
    page.wait_for_selector(f"tr[data-job='{student}']")
    assert page.locator("#jobs tbody tr").count() == 3  # the key was asked for once only
    page.select_option("#status-filter", "cancelled")
    page.wait_for_function("document.querySelectorAll('#jobs tbody tr').length === 1")
    page.select_option("#status-filter", "")
    page.wait_for_function("document.querySelectorAll('#jobs tbody tr').length === 3")
    page.screenshot(path=str(OUTPUT / "dashboard-jobs.png"), full_page=True)


def test_an_uploaded_graph_teacher_and_its_layers_in_the_form(browser, served, tmp_path):
    """The form offers an uploaded ONNX teacher, lists its tensors for the layer pairs,
    and submits the pair chosen (no architecture for a graph)."""
    url, key = served
    headers = {"Authorization": f"Bearer {key}"}
    graph = torch_graph(tmp_path / "conv.onnx", epochs=0).read_bytes()
    uploaded = httpx.post(
        f"{url}/v1/files?purpose=model",
        content=graph,
        headers=headers | {"X-Filename": "conv.onnx"},
        timeout=120,
    )
    assert uploaded.status_code == 201, uploaded.text
    file_id = uploaded.json()["id"]

    page = signed_in_page(browser, url, key, "/new")
    page.wait_for_selector("#job-form")
    page.select_option("#mode", "distill")
    page.select_option("#teacher-checkpoint", file_id)
    page.select_option("#student-architecture", "cnn_small")
    page.select_option("#dataset", "digits")
    page.fill("#epochs", "1")
    page.click("#add-pair")
    teacher_layers = page.eval_on_selector_all(".pair-teacher option", "o => o.map(x => x.value)")
    assert "/Relu_1_output_0" in teacher_layers and "penultimate" in teacher_layers
    assert page.eval_on_selector("#teacher-architecture", "s => s.disabled")
    page.select_option(".pair-teacher", "/Relu_1_output_0")
    page.select_option(".pair-student", "stage2")
    page.select_option("#kind", "ot")  # the term that reads the layer pair
    page.click("#submit")
    page.wait_for_url("**/#/jobs/job_*")
    job_id = page.url.rsplit("/", 1)[1]
    spec = httpx.get(f"{url}/v1/jobs/{job_id}", headers=headers).json()["spec"]
    assert spec["teacher"]["checkpoint"] == file_id and spec["teacher"]["architecture"] is None
    assert spec["regularizer"]["layers"][0] | {"weight": 1.0} == {
        "teacher": "/Relu_1_output_0",
        "student": "stage2",
        "weight": 1.0,
    }


def test_a_sweep_page_shows_its_trials_the_metric_by_value_and_the_best_job(browser, served):
    url, key = served
    headers = {"Authorization": f"Bearer {key}"}
    body = {
        "base": {
            "mode": "supervised",
            "student": {"architecture": "mlp_small"},
            "dataset": {"name": "digits", "train_subset": 300},
            "training": {"epochs": 2, "batch_size": 32},
        },
        "space": {"training.lr": [0.003, 0.3], "training.optimizer": ["sgd", "adamw"]},
        "search": "grid",
        "parallel": 2,
    }
    created = httpx.post(f"{url}/v1/sweeps", json=body, headers=headers, timeout=60)
    assert created.status_code == 201, created.text
    sweep_id = created.json()["id"]

    page = signed_in_page(browser, url, key, "/sweeps")
    page.click(f"tr[data-sweep='{sweep_id}'] a")
    page.wait_for_selector("#sweep-summary [data-status='succeeded']", timeout=180_000)
    assert page.locator("#trials tbody tr").count() == 4
    for field in ("training.lr", "training.optimizer"):
        drawn = page.eval_on_selector(f"canvas[data-field='{field}']", "c => c.dataset.points")
        assert int(drawn) == 4, field
    assert page.is_hidden("#cancel-sweep")
    best = httpx.get(f"{url}/v1/sweeps/{sweep_id}", headers=headers).json()["best"]
    assert f"{100 * best['metric']:.1f}%" in page.text_content("#best")
    page.screenshot(path=str(OUTPUT / "dashboard-sweep.png"), full_page=True)
    page.click(f"#best a[href='#/jobs/{best['job_id']}']")
    page.wait_for_selector("#job-header [data-status='succeeded']")


def test_a_pushed_folder_shows_its_counts_and_unreadable_files(browser, served, tmp_path):
    """`push_dataset` (as `otrt datasets push`) of images of varying sizes, one truncated:
    the dashboard lists the dataset, then shows its counts and the unreadable file."""
    import otrt
    from tests.utils.images import awkward_files, image_tree

    url, key = served
    image_tree(tmp_path / "shop", classes=2, per_class=15, sizes=(30, 90))
    awkward_files(tmp_path / "shop" / "train" / "class_1")
    with otrt.Client(url, key, timeout=60) as client:
        dataset = client.wait_dataset(client.push_dataset(tmp_path / "shop")["id"], timeout=120)
    assert dataset["status"] == "ready", dataset["error"]

    page = signed_in_page(browser, url, key, "/datasets")
    page.click(f"tr[data-dataset='{dataset['id']}'] a")
    page.wait_for_selector("#counts tr")
    counts = page.text_content("#counts")
    assert "class_0" in counts and "class_1" in counts
    assert "truncated.jpg" in page.text_content("#unreadable")
    assert "null" not in page.text_content("#view")  # no left-out part printed as "null"
    page.screenshot(path=str(OUTPUT / "dashboard-dataset.png"), full_page=True)

    # The new-job form offers it, and a job submitted there trains on it.
    page.goto(page.url.split("#")[0] + "#/new")
    page.wait_for_selector(f"#dataset option[value='{dataset['id']}']", state="attached")
    page.select_option("#mode", "supervised")
    page.select_option("#student-architecture", "cnn_small")
    page.select_option("#dataset", dataset["id"])
    page.fill("#epochs", "1")
    page.click("#submit")
    wait_until_succeeded(page)


def test_a_collapsed_student_is_flagged_on_its_job_page(browser, served):
    """A learning rate that cannot move the weights leaves the student at chance: the
    report card says it collapsed, beside the job's warning in the log."""
    url, key = served
    headers = {"Authorization": f"Bearer {key}"}
    body = {
        "mode": "supervised",
        "student": {"architecture": "mlp_small"},
        "dataset": {"name": "digits"},
        "training": {"epochs": 2, "batch_size": 64, "lr": 1e-9},
    }
    created = httpx.post(f"{url}/v1/jobs", json=body, headers=headers, timeout=60)
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    page = signed_in_page(browser, url, key, f"/jobs/{job_id}")
    page.wait_for_selector("#report-collapsed", timeout=180_000)
    assert "collapsed" in page.text_content("#report-collapsed")
    assert "null" not in page.text_content("#report-card")
    job = httpx.get(f"{url}/v1/jobs/{job_id}", headers=headers).json()
    assert job["metrics"]["collapsed"] is True
    page.screenshot(path=str(OUTPUT / "dashboard-collapsed.png"), full_page=True)
