"""Optional integrations with training frameworks: :mod:`iexact.integrations.lightning`
(``pip install "iexact[lightning]"``)."""
