"""The routes the app serves itself: the SDK's image and deploy routes, and the task routes."""
