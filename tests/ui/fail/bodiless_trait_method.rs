use lockutils::synchronized;

trait Apply {
    #[synchronized("iptables")]
    fn apply(&self);
}

fn main() {}
