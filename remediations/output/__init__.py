"""What a person or a program reads: run rendering, the report formats, schedule units.
"""
