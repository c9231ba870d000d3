"""The auditor's monthly access export: writing it, its file format, the PDF report, verifying it offline."""
