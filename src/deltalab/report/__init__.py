"""Reports: the helpers every report uses (`figures`: matplotlib setup and saving; `tables`:
markdown tables and CSV files) and the evaluate/compare (`evaluation`) and behavior reports."""
