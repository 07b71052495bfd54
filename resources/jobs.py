"""Jobs (§12): long work a worker does outside the request. The requests that start
one (a big store deletion, an import, an export job) answer 202 with the job
(``accepted``); here a job is read, listed, canceled, and an export's file fetched."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flask import Response, jsonify, request, stream_with_context, url_for
from flask.views import MethodView
from flask_jwt_extended import current_user
from sqlalchemy import Select, select

from core.auth import scopes
from core.auth.permissions import key_store, login_required
from core.auth.security import api_key
from core.catalog import csv_format
from core.jobs import engine, files
from core.jobs.document import job_document, serves_file
from core.lists.listing import LIST_HEADERS, Listing, Rows
from core.web.errors import abort
from core.web.http import no_store
from core.web.smorest import Blueprint
from db import db
from models import Job
from schemas import JobSchema

blp = Blueprint("jobs", __name__, url_prefix="/jobs", description="Long work in the background")
blp.after_request(no_store)

JOB_LOCATION = {"Location": {"schema": {"type": "string"}, "description": "URL of the job"}}
# The 202 of every request that starts a job: @blp.alt_response(202, **ACCEPTED).
ACCEPTED = {
    "schema": JobSchema,
    "headers": JOB_LOCATION,
    "description": "A job does the work: follow Location (GET /jobs/{id})",
}


def as_json(job: Any) -> dict[str, Any]:
    """The job as JobSchema dumps it, for the caller, its links under this request's
    root (``links.file`` only for a caller who may fetch it: not a key without the
    scopes of the file)."""
    reader = current_user.id if scopes.allows(api_key(), "jobs.JobFile") else None
    return job_document(job, request.script_root, reader=reader)


def accepted(job: Job) -> Response:
    """202 with the job and its Location: what every request that starts a job answers."""
    response = jsonify(JobSchema().dump(as_json(job)))
    response.status_code = 202
    response.headers["Location"] = url_for("jobs.JobById", job_id=job.id)
    return response


def start(job: Job) -> Response:
    """Commit the new job, hand it to a worker, answer 202."""
    db.session.commit()
    body = accepted(job)  # as committed: queued (an eager task may finish it meanwhile)
    engine.enqueue(job.id)
    return body


def _visible_job(job_id: int) -> Job:
    """The caller's job (any job for an admin; through an API key bound to a store:
    that store's); others' are 404, as unknown ids are."""
    job = db.session.get(Job, job_id)
    if (
        job is None
        or not (current_user.is_admin or job.user_id == current_user.id)
        or key_store() not in (None, job.store_id)
    ):
        abort(404, message=f"Job {job_id} not found.")
    return job


# Read as plain rows: as_json reads a row's columns as it reads a Job's attributes.
JOBS = Listing(
    {"id": (Job.id,)},
    default="-id",
    sortable=False,
    rows=Rows(lambda query, _fields: query, lambda rows, _fields: [as_json(row) for row in rows]),
)


@blp.route("")
class Jobs(MethodView):
    @login_required(blp)
    @blp.response(200, JobSchema(many=True), headers=LIST_HEADERS)
    @JOBS.paginate(blp)
    def get(self, _args: dict[str, Any]) -> Select[Job]:
        """List your jobs, newest first (an admin: everyone's)"""
        query = select(Job)
        if not current_user.is_admin:
            query = query.where(Job.user_id == current_user.id)
        bound = key_store()  # an API key bound to a store: that store's jobs
        return query if bound is None else query.where(Job.store_id == bound)


@blp.route("/<id:job_id>")
class JobById(MethodView):
    @login_required(blp)
    @blp.response(200, JobSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, job_id: int) -> dict[str, Any]:
        """One job: its status, progress, result or error"""
        return as_json(_visible_job(job_id))

    @login_required(blp)
    @blp.response(202, JobSchema, headers=JOB_LOCATION)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT")
    def delete(self, job_id: int) -> Response:
        """Cancel a queued or running job (it stops at its next batch)"""
        job = _visible_job(job_id)
        if job.type == "store_delete":
            abort(
                409,
                message=f"Job {job_id} deletes a store: it cannot be canceled.",
                error="job_not_cancelable",
            )
        if not engine.cancel(job):
            abort(
                409,
                message=f"Job {job_id} has finished ({job.status}): nothing to cancel.",
                error="job_not_cancelable",
            )
        db.session.commit()
        return accepted(job)


@blp.route("/<id:job_id>/file")
class JobFile(MethodView):
    @login_required(blp)
    @blp.response(200, {"type": "string"}, content_type="text/csv", example=csv_format.example())
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, job_id: int) -> Response:
        """An export job's CSV (its creator, for 24 hours after it finished)"""
        job = _visible_job(job_id)  # as GET /jobs/{id} finds it: a bound key, its store's
        if not serves_file(job, current_user.id) or not files.has(job.id, "output"):
            abort(
                404,
                message=f"Job {job_id} has no file for you "
                "(not an export, not done, expired, or another user's).",
            )

        def generate() -> Iterator[bytes]:
            yield from files.chunks(job.id, "output")

        response = Response(stream_with_context(generate()), mimetype="text/csv")
        response.headers["Content-Type"] = "text/csv; charset=utf-8"
        response.headers["Content-Disposition"] = f'attachment; filename="export-{job.id}.csv"'
        return response
