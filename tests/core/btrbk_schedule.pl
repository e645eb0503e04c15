#!/usr/bin/perl
# Runs btrbk's own schedule() (the code its prune runs) on cases read as JSON lines from stdin,
# one JSON line out per case: {"kept": [...], "kept_fixed": [...]}, the indices of the snapshots
# it keeps. The subs are taken from the installed btrbk at run time (argv[0], default
# /usr/bin/btrbk) rather than copied, so the test follows the btrbk that is installed.
#
# In:  {"tz": "Europe/Berlin", "now": EPOCH, "times": [EPOCH, ...],
#       "preserve": {"hod": 0, "dow": "sunday", "h": "24", "d": "all", "min_q": "d", "min_n": "2"}}
# "kept_fixed" comes from the same code with its month correction computed from the day that
# starts at preserve_hour_of_day (the manual's meaning; replicator follows it, see the README).
use strict;
use warnings;
use JSON::PP;
use POSIX ();

my $btrbk = shift // '/usr/bin/btrbk';
open(my $fh, '<', $btrbk) or die "cannot read $btrbk: $!";
my $source = do { local $/; <$fh> };
close($fh);

sub extract {
    my ($name) = @_;
    $source =~ /^(sub \Q$name\E\b.*?^\}\n)/ms or die "sub $name not found in $btrbk\n";
    return $1;
}
$source =~ /^(my %day_of_week_map = .*?;)$/m or die "day_of_week_map not found in $btrbk\n";
my $map = $1;
my $subs = join("\n", map { extract($_) } qw(cmp_date schedule _format_preserve_delta format_preserve_matrix));

my $month_test = '$tm[3] <= $delta_days_from_eow';
my $month_fixed = '($tm[3] - ((($tm[2] - ($has_exact_time ? $preserve_hour_of_day : 0)) < 0) ? 1 : 0)) <= $delta_days_from_eow';
(my $fixed = $subs) =~ s/\Q$month_test\E/$month_fixed/ or die "month correction not found in $btrbk\n";

for my $variant (['Original', $subs], ['Fixed', $fixed]) {
    my ($package, $code) = @$variant;
    eval qq{
        package $package;
        use strict;
        use Time::Local qw(timegm_nocheck);
        my \@tm_now;
        my \$do_trace = 0;
        $map
        sub DEBUG {} sub TRACE {} sub timestamp { return '' }
        sub set_now { \@tm_now = localtime(\$_[0]); }
        $code
        1;
    } or die "loading btrbk's schedule(): $@";
}

my $json = JSON::PP->new->canonical;
$| = 1;
while (my $line = <STDIN>) {
    my $case = $json->decode($line);
    local $ENV{TZ} = $case->{tz};
    POSIX::tzset();
    my %out;
    for my $variant (['Original', 'kept'], ['Fixed', 'kept_fixed']) {
        my ($package, $key) = @$variant;
        no strict 'refs';
        &{"${package}::set_now"}($case->{now});
        my @schedule;
        my $i = 0;
        # NN (the second date field) keeps the caller's order for equal times.
        for my $t (@{$case->{times}}) {
            push @schedule, { value => $i, btrbk_date => [$t, $i, 1] };
            $i++;
        }
        my ($preserve, undef) = &{"${package}::schedule"}(
            schedule => \@schedule, preserve => { %{$case->{preserve}} },
            preserve_date_in_future => 1);
        $out{$key} = [ sort { $a <=> $b } @$preserve ];
    }
    print $json->encode(\%out), "\n";
}
