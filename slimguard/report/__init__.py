"""Reports: self-contained HTML pages rendered from run directories."""
