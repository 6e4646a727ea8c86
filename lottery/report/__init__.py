"""`lottery report`: fine-tune results side by side, as tables (CSV, Markdown) and figures (PNG)."""
