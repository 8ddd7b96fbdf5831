"""Engine results to what Supervisely shows: prediction DTOs, annotations, drawings."""
