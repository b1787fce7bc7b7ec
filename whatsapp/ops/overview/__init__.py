"""The admin's live overview: one page (views.page) and the small JSON it polls (views.data)."""
