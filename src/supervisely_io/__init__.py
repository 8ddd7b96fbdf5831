"""Supervisely project input and output shared by the server and the jobs: image decoding,
sources (folders, project folders, projects and datasets by id), project output and upload.
Imports neither the app nor the jobs."""
