from django.apps import AppConfig


class ClassifierConfig(AppConfig):
    """The reference classifier: a stand-in for the AI service that runs as its own process."""

    name = "classifier"
    verbose_name = "Reference classifier"

    def ready(self) -> None:
        from classifier import checks  # noqa: F401  (registers the backend check)
