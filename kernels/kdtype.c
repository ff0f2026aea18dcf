/* kdtype.c — placeholder, being written. */
typedef int sl__placeholder_kdtype;
