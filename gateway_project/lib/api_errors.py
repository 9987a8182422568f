"""The error contract (gateway_project.lib.errors) as a django-ninja schema, for the JSON
API's documentation: every app's endpoints document their refusals with ErrorOut."""

from ninja import Schema


class ErrorDetail(Schema):
    message: str
    type: str
    code: str
    param: None = None


class ErrorOut(Schema):
    error: ErrorDetail
