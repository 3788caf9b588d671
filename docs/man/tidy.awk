# docs/man/tidy.awk: scdoc 1.11 writes paragraph macros where they do nothing (.P right after .TH
# or .SH, before a heading, another .P, or the .RE that ends an indented block), which mandoc
# -Tlint reports. This keeps each paragraph break where it takes effect: a .P before .RE moves
# after it (so indented entries stay apart), and the others are dropped. The text is unchanged.
function heading(l) { return l ~ /^\.(TH|SH|SS)( |$)/ }
/^\.\\"/ { print; next }
$0 == ".P" { pending = 1; next }
$0 == ".RE" { print; last = $0; next }
{
    if (pending && !heading($0) && !heading(last) && last != ".RS 4") print ".P"
    pending = 0
    print
    last = $0
}
